"""Logit-lens (and tuned-lens) readouts: the metric read from an intermediate residual stream.

    eff = ci.logit_lens(model, data, positions=["S2", "end"])      # Effects, one column per layer x position
    ev = ci.evaluate(eff, ci.claims.recovers(at_least=0.9))        # the usual statistics and verdicts
    ci.lens.readable_from(ev)                                       # {"end": 2, "S2": None}: from layer k on

A site-free view: no intervention, nothing patched.  The residual stream after block ``l`` (``resid_post``)
at a position is sent through the model's own final norm and unembedding (the adapter table names them),
or through a user lens, and the metric is computed from those logits per prompt.  At the last layer this is
exactly the model's own output (same modules on the same tensor), so its column equals the unpatched
metric bit for bit.

The result is framed like a denoising scan, so every claim means something: ``values`` is the lens metric
on the clean prompts (``prompts="clean"``), ``clean``/``corrupt`` are the model's own final metric on the
two prompt sets, ``base = corrupt`` and ``target = clean``.  ``recovers(at_least=0.9)`` then reads "layer
l already shows 90% of the model's final clean-vs-corrupt gap", and `readable_from` gives, per position,
the first layer from which every later layer is supported.  ``kl_to_clean`` is the classic lens curve
(KL of the final distribution to the layer's).

A user lens is any ``lens(layer, resid) -> logits`` with ``resid [rows, T, d_model]``; `tuned` builds the
tuned-lens form (Belrose et al. 2023): ``unembed(final_norm(h + translator_l(h)))``.

Examples:
    >>> import causalinterp as ci
    >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(16, seed=0)
    >>> ev = ci.evaluate(ci.logit_lens(model, data, positions=["end"]), ci.claims.recovers(at_least=0.9))
    >>> sorted(ci.lens.readable_from(ev))
    ['end']
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .engine.effects import Effects
from .engine.unit import add_noise, embedding_module
from .models.adapters import UnsupportedModelError, raw_tensor
from .models.load import Model, load_model
from .spec.data import ContrastSet, DataError
from .spec.metrics import Metric, MetricError, logit_diff
from .spec.sites import Site

__all__ = ["logit_lens", "final_logits", "tuned", "readable_from", "LensError"]


class LensError(ValueError):
    """A lens readout that cannot run as asked; the message says what to change."""


def _modules(model: Model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The final norm and the unembedding of `model` (from its adapter table)."""
    a = model.adapter
    if not getattr(a, "final_norm", ""):
        raise UnsupportedModelError(f"the {a.family} adapter does not name its final norm; add final_norm= to its "
                                    "table in causalinterp/models/adapters.py")
    norm = model.hf.get_submodule(a.final_norm)
    unembed = model.hf.get_submodule(a.unembed) if getattr(a, "unembed", "") else model.hf.get_output_embeddings()
    return norm, unembed


def final_logits(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """Logits the model would output if `resid` (``[..., d_model]``) were its last residual stream."""
    norm, unembed = _modules(model)
    with torch.no_grad():
        return unembed(norm(resid.to(model.device)))


def tuned(model: Model, translators: Mapping[int, Callable] | Sequence[Callable]) -> Callable:
    """A tuned lens: ``unembed(final_norm(h + translators[layer](h)))``; a layer without a translator reads
    as the logit lens.  `translators` are e.g. ``torch.nn.Linear(d_model, d_model)`` per layer."""
    table = dict(translators) if isinstance(translators, Mapping) else dict(enumerate(translators))

    def lens(layer: int, resid: torch.Tensor) -> torch.Tensor:
        t = table.get(layer)
        with torch.no_grad():
            h = resid if t is None else resid + t(resid)
        return final_logits(model, h)

    return lens


def _resolve_positions(data: ContrastSet, positions) -> list:
    if positions is None:
        return ["end"]
    if isinstance(positions, (str, int)):
        positions = [positions]
    out = []
    for p in positions:
        try:
            [data.position_index(p, i) for i in range(data.n)]
        except DataError as e:
            raise LensError(f"position {p!r}: {e}") from None
        if isinstance(p, int) and not all(-L <= p < L for L in data.lengths):
            raise LensError(f"position {p} is outside some prompts (lengths {min(data.lengths)}..{max(data.lengths)})")
        out.append(p)
    if len(set(map(str, out))) != len(out):
        raise LensError("positions lists the same position twice")
    return out


def _run(model: Model, tokens: torch.Tensor, layers: Sequence[int], batch: int, readout, noise=None,
         emb_path=None) -> torch.Tensor:
    """Through nnsight, per chunk of prompts: the model's own logits ``[n, T, V]``, and ``readout(layer,
    resid_post [b, T, d], rows)`` for each of `layers` (kept as it returns)."""
    import nnsight
    logits = []
    kwargs = {"remote": True} if model.remote else {}
    for s in range(0, tokens.shape[0], batch):
        toks = tokens[s:s + batch].to(model.device)
        with torch.inference_mode():
            with model.nn.trace(toks, **kwargs):
                add_noise(model, emb_path, None if noise is None else noise[s:s + batch])
                saved = []
                for l in layers:
                    loc = model.location("resid_post", l)
                    env = model.envoy(loc.module)
                    saved.append(raw_tensor(env.input if loc.io == "input" else env.output).clone())
                saved = nnsight.save(saved)
                out = nnsight.save(model.nn.output.logits)
        rows = torch.arange(s, s + toks.shape[0])
        for l, t in zip(layers, saved):
            readout(l, t, rows)
        logits.append(out.cpu())
    return torch.cat(logits)


def logit_lens(model, data: ContrastSet, *, layers: Sequence[int] | None = None, positions=None,
               metric: Metric | None = None, lens: Callable | None = None, prompts: str = "clean",
               batch_size: int | None = None) -> Effects:
    """Per-prompt metric read through the lens at every layer x position (see the module docstring).

    layers     blocks whose output (``resid_post``) is read (default: all)
    positions  token positions to read at, ints or named positions of the data (default: the metric's)
    metric     what is computed from the lens logits at each position against the data's answers
               (default `metrics.logit_diff`); its own position is where the final baselines are read
    lens       ``lens(layer, resid [rows, T, d_model]) -> logits [rows, T, vocab]``; default: the model's
               final norm + unembedding, applied to whole sequences as the model does (so the last layer is
               bit-identical to the model's output)
    prompts    "clean" or "corrupt": which prompts are read through the lens
    batch_size prompts per forward pass (default: as many as keep one layer's logits under ~256 MB)
    Returns `Effects` with one column per (layer, position), sites ``resid_post L{l} @{position}``.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(16, seed=0)
        >>> ci.logit_lens(model, data, positions=["end"]).values.shape     # one column per layer
        (16, 3)
    """
    if not isinstance(model, Model):
        model = load_model(model)
    if not isinstance(data, ContrastSet):
        raise LensError(f"data must be a ContrastSet, got {type(data).__name__}")
    metric = metric or logit_diff()
    if not isinstance(metric, Metric):
        raise LensError("metric must come from ci.metrics (e.g. ci.metrics.logit_diff())")
    if metric.needs_wrong and data.wrong is None:
        raise MetricError("logit_diff needs wrong answers: pass wrong=... to the ContrastSet, or use metrics.logprob()")
    if prompts not in ("clean", "corrupt"):
        raise LensError(f"prompts must be 'clean' or 'corrupt', got {prompts!r}")
    data.check_vocab(model.vocab_size)
    layers = list(range(model.n_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad or not layers:
        raise LensError(f"layers {bad or layers}: this model has layers 0..{model.n_layers - 1}")
    positions = _resolve_positions(data, positions if positions is not None else [metric.position])
    pos_index = torch.tensor([[data.position_index(p, i) for p in positions] for i in range(data.n)])  # [n, P]
    T = max(data.lengths)
    if batch_size is None:
        batch_size = max(1, min(data.n, (64 * 2**20) // max(1, T * model.vocab_size)))
    user_lens = lens
    lens = lens or (lambda layer, resid: final_logits(model, resid))
    read = {}   # layer -> [n, P, V] logits at the read positions

    def readout(layer, resid, rows):
        with torch.no_grad():
            logits = lens(layer, resid)
        if logits.shape[:2] != resid.shape[:2] or logits.shape[-1] != model.vocab_size:
            raise LensError(f"the lens returned logits of shape {tuple(logits.shape)} at layer {layer}; expected "
                            f"{(*resid.shape[:2], model.vocab_size)} (rows x positions x vocabulary)")
        idx = pos_index[rows].to(logits.device)
        read.setdefault(layer, []).append(logits[torch.arange(len(rows), device=logits.device)[:, None], idx]
                                          .float().cpu())

    clean_logits = _run(model, data.tokens("clean"), layers if prompts == "clean" else [], batch_size, readout)
    noise = data.corruption.draw(model, data) if data.corruption is not None else None  # embedding-noise corrupt run
    corrupt_logits = _run(model, data.tokens("corrupt"), layers if prompts == "corrupt" else [], batch_size, readout,
                          noise, embedding_module(model) if noise is not None else None)
    rows = torch.arange(data.n)
    answer = torch.tensor(data.answer)
    wrong = torch.tensor(data.wrong) if data.wrong is not None else None
    own = torch.tensor([data.position_index(metric.position, i) for i in range(data.n)])
    ref_clean = clean_logits[rows, own].float()
    clean_metric = metric.compute(ref_clean, answer, wrong, ref_clean).numpy()
    corrupt_metric = metric.compute(corrupt_logits[rows, own].float(), answer, wrong, ref_clean).numpy()

    sites, columns = [], []
    for l in layers:
        got = torch.cat(read[l])                              # [n, P, V]
        for j, p in enumerate(positions):
            ref = clean_logits[rows, pos_index[:, j]].float()  # kl_to_clean: the model's final clean distribution
            columns.append(metric.compute(got[:, j], answer, wrong, ref).numpy())
            sites.append(Site("resid_post", l, None, p))
    values = np.stack(columns, axis=1)
    if not np.isfinite(values).all():
        raise MetricError("the lens metric is NaN or infinite for some prompts; check the lens and the dtype")
    meta = {"lens": "logit" if user_lens is None else getattr(user_lens, "__name__", "user"), "prompts": prompts,
            "model": model.name or type(model.hf).__name__, "readout": "final norm + unembedding of resid_post"}
    return Effects(values=values, clean=clean_metric, corrupt=corrupt_metric, sites=tuple(sites),
                   base=corrupt_metric.copy(), target=clean_metric.copy(), metric=metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters), meta=meta)


def readable_from(evaluation) -> dict:
    """Per position: the first layer from which every later layer's verdict is supported (None if even the
    last layer's is not).  Takes an `Evaluation` or a `Result` of a lens readout."""
    ev = getattr(evaluation, "evaluation", evaluation)
    t = ev.table
    out = {}
    for pos, rows in t.groupby(t["position"].astype(str), sort=False):
        rows = rows.sort_values("layer")
        ok = (rows["verdict"] == "supported").to_numpy()
        layers = rows["layer"].astype(int).to_numpy()
        first = None
        for i in range(len(ok) - 1, -1, -1):
            if not ok[i]:
                break
            first = int(layers[i])
        out[pos] = first
    return out
