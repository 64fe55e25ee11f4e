"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

The corrupt run is the clean prompt with seeded Gaussian noise added to its input embeddings at chosen
positions (e.g. the subject tokens), instead of a second prompt:

    noise = ci.tracing.EmbeddingNoise(positions=["S1"], scale=3.0, seed=0)   # scale x the embedding std
    eff = ci.causal_trace(model, data, noise)                 # restore clean resid_post at every layer x position
    eff = ci.causal_trace(model, data, noise, sever="mlp")    # ... with the MLPs after it frozen (corrupted)
    ev = ci.evaluate(eff, ci.claims.has_effect("increase"))   # per-cell statistics and verdicts

Each column of the returned `Effects` is one (layer, position) cell of the causal-trace heatmap: the metric,
per prompt, of the noisy run with the clean state of `component` at that layer and position restored.
``clean`` is the clean run, ``corrupt`` the noisy run (base), so `claims.recovers` reads as "restoring this
state recovers at least tau of what the noise destroyed".

- noise: per prompt ``i`` a fixed generator (seeded from ``seed`` and ``i``) draws ``N(0, I)`` for each
  corrupted position, times ``scale`` times the standard deviation of the input-embedding matrix (``std``
  to override, e.g. ROME's 3 x the std of subject-token embeddings over a corpus).  It is added to the
  output of the model's input-embedding module (``get_input_embeddings()``; before GPT-2's position
  embeddings, as in ROME).  Same seed, same prompt: the same noise, whatever the batching.
- ``component``: ``resid_post`` (the hidden state, ROME's default), ``mlp_out`` or ``attn_out``, restored
  at ``window`` consecutive layers centred on the cell's layer (ROME uses 10 for MLP/attention traces).
- ``sever="mlp"`` / ``"attn"``: with resid_post restored at (l, p), the MLP (attention) outputs at
  position p in every later layer are frozen at their noisy-run values, so the restored state can act only
  through the other path (ROME's "severed" traces).

Examples:
    >>> import causalinterp as ci
    >>> ci.tracing.causal_trace is ci.causal_trace and ci.tracing.EmbeddingNoise is ci.EmbeddingNoise
    True
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .engine.effects import Effects
from .engine.plan import COMPONENT_ORDER
from .engine.unit import add_noise, embedding_module
from .models.adapters import raw_tensor
from .models.load import Model, load_model
from .spec.corruption import EmbeddingNoise, TracingError
from .spec.data import ContrastSet, DataError
from .spec.interventions import patch
from .spec.metrics import Metric, MetricError, logit_diff
from .spec.sites import Site

__all__ = ["EmbeddingNoise", "TracingError", "causal_trace", "embedding_module", "COMPONENTS", "SEVER"]

COMPONENTS = ("resid_post", "mlp_out", "attn_out")
SEVER = {"mlp": "mlp_out", "attn": "attn_out"}


def _layers_of(component: str, layer: int, window: int, n_layers: int) -> list[int]:
    if component == "resid_post" or window == 1:
        return [layer]
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def _run(model: Model, tokens, noise, emb_path: str, read_pos, writes, save_keys=()):
    """One forward pass: `noise` ([B, T, d] or None) added to the embeddings, then `writes`
    {(layer, component): [(rows, positions, values)]} in execution order; logits at `read_pos` and the
    canonical activations of `save_keys` [(component, layer)]."""
    import nnsight
    keys = sorted(set(writes) | {(l, c) for c, l in save_keys}, key=lambda k: (k[0], COMPONENT_ORDER[k[1]]))
    B = tokens.shape[0]
    with torch.inference_mode():
        with model.nn.trace(tokens.to(model.device)):
            add_noise(model, emb_path, noise)
            saved = {}
            for layer, comp in keys:
                loc = model.location(comp, layer)
                env = model.envoy(loc.module)
                raw = raw_tensor(env.input if loc.io == "input" else env.output)
                for rows, pos, vals in writes.get((layer, comp), ()):
                    raw[rows.to(raw.device), pos.to(raw.device)] = vals.to(device=raw.device, dtype=raw.dtype)
                if (comp, layer) in save_keys:
                    saved[(comp, layer)] = raw.clone()
            saved = nnsight.save(saved)
            logits = nnsight.save(model.nn.output.logits[torch.arange(B), read_pos.to(model.device)])
    return logits.float().cpu(), {k: v.cpu() for k, v in saved.items()}


def causal_trace(model, data: ContrastSet, corruption: EmbeddingNoise, *, layers: Sequence[int] | None = None,
                 positions=None, component: str = "resid_post", window: int = 1, sever: str | None = None,
                 metric: Metric | None = None, batch_size: int = 64) -> Effects:
    """The causal-trace heatmap as per-prompt `Effects` (see the module docstring).

    layers     layers of the heatmap (default: all); positions: ints or named positions (default: every
               position, which needs prompts of one length)
    component  what is restored: resid_post (hidden state), mlp_out or attn_out (over `window` layers)
    sever      None, "mlp" or "attn" (resid_post only): freeze that path at the restored position in all
               later layers at its noisy-run value
    metric     default `metrics.logit_diff`; read at the metric's position
    batch_size rows (cells x prompts) per forward pass

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(16, seed=0)
        >>> eff = ci.causal_trace(model, data, ci.EmbeddingNoise(positions=("S1",)), positions=["S1", "end"])
        >>> eff.values.shape                                   # 16 prompts x (3 layers x 2 positions)
        (16, 6)
    """
    if not isinstance(model, Model):
        model = load_model(model)
    if not isinstance(data, ContrastSet):
        raise TracingError(f"data must be a ContrastSet, got {type(data).__name__}")
    if not isinstance(corruption, EmbeddingNoise):
        raise TracingError("corruption must be an EmbeddingNoise(positions=[...], scale=3, seed=0)")
    if component not in COMPONENTS:
        raise TracingError(f"component {component!r}: causal tracing restores one of {', '.join(COMPONENTS)}")
    if sever is not None and (sever not in SEVER or component != "resid_post"):
        raise TracingError(f"sever={sever!r}: use 'mlp' or 'attn', with component='resid_post' (the hidden state)")
    if int(window) < 1:
        raise TracingError(f"window = {window} must be >= 1")
    metric = metric or logit_diff()
    if metric.needs_wrong and data.wrong is None:
        raise MetricError("logit_diff needs wrong answers: pass wrong=... to the ContrastSet, or use metrics.logprob()")
    data.check_vocab(model.vocab_size)
    L = model.n_layers
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    if not layers or any(not 0 <= l < L for l in layers):
        raise TracingError(f"layers {layers}: this model has layers 0..{L - 1}")
    if positions is None:
        if len(set(data.lengths)) != 1:
            raise TracingError("positions=None means every position, but the prompts differ in length; name the "
                               "positions (e.g. positions=['S1', 'end'])")
        positions = list(range(data.lengths[0]))
    elif isinstance(positions, (str, int)):
        positions = [positions]
    try:
        pos_idx = np.array([[data.position_index(p, i) for p in positions] for i in range(data.n)])  # [n, P]
    except DataError as e:
        raise TracingError(f"positions: {e}") from None
    n, T = data.n, max(data.lengths)
    tokens = data.tokens("clean")
    read_pos = torch.tensor([data.position_index(metric.position, i) for i in range(n)])
    answer = torch.tensor(data.answer)
    wrong = torch.tensor(data.wrong) if data.wrong is not None else None
    noise = corruption.draw(model, data)
    emb_path = embedding_module(model)

    restore = sorted({(component, l2) for l in layers for l2 in _layers_of(component, l, window, L)},
                     key=lambda k: k[1])
    frozen = [(SEVER[sever], l) for l in range(L)] if sever else []
    clean_logits, clean_acts = _run(model, tokens, None, emb_path, read_pos, {}, restore)
    noisy_logits, noisy_acts = _run(model, tokens, noise, emb_path, read_pos, {}, frozen)
    clean_metric = metric.compute(clean_logits, answer, wrong, clean_logits).numpy()
    noisy_metric = metric.compute(noisy_logits, answer, wrong, clean_logits).numpy()

    cells = [(l, j) for l in layers for j in range(len(positions))]
    values = np.empty((n, len(cells)))
    per_pass = max(1, int(batch_size) // n)
    for start in range(0, len(cells), per_pass):
        chunk = cells[start:start + per_pass]
        writes: dict = {}
        for c, (l, j) in enumerate(chunk):
            rows = torch.arange(c * n, (c + 1) * n)
            pos = torch.as_tensor(pos_idx[:, j])
            for l2 in _layers_of(component, l, window, L):
                src = clean_acts[(component, l2)]
                writes.setdefault((l2, component), []).append((rows, pos, src[torch.arange(n), pos]))
            for comp, l2 in frozen:
                if l2 > l:
                    src = noisy_acts[(comp, l2)]
                    writes.setdefault((l2, comp), []).append((rows, pos, src[torch.arange(n), pos]))
        k = len(chunk)
        logits, _ = _run(model, tokens.repeat(k, 1), noise.repeat(k, 1, 1), emb_path, read_pos.repeat(k), writes)
        vals = metric.compute(logits, answer.repeat(k), None if wrong is None else wrong.repeat(k),
                              clean_logits.repeat(k, 1)).numpy()
        values[:, start:start + k] = vals.reshape(k, n).T
    if not np.isfinite(values).all():
        raise MetricError("the causal-trace metric is NaN or infinite for some prompts; check the dtype and answers")
    sites = tuple(Site(component, l, None, positions[j]) for l, j in cells)
    meta = {"corruption": corruption.to_dict(), "noise_unit": corruption.unit(model), "component": component,
            "window": int(window), "sever": sever, "model": model.name or type(model.hf).__name__}
    return Effects(values=values, clean=clean_metric, corrupt=noisy_metric, sites=sites, base=noisy_metric.copy(),
                   target=clean_metric.copy(), intervention=patch("denoise"), metric=metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters), meta=meta)
