"""Path patching: per-prompt metric values for path sites (`causalinterp.spec.paths`), batched.

For a path (senders -> receivers) and a prompt, on the base run of the intervention:

1. each sender's change to the residual stream is computed from the cached base and source runs: a head
   through the attention output projection (only its slice of the projection's input changes), an
   attention/MLP output or a residual-stream site directly;
2. *compute pass*: at each receiver's layer the residual stream the receiver reads (``resid_pre``; for an
   MLP in a sequential block ``resid_mid``) is overwritten with the base run's stream plus the change of
   every sender upstream of it, and the receiver's q/k/v (or MLP output) is read;
3. *final pass*: the base run with the receivers' recomputed values written in (all other components run
   normally); the metric is read from its logits.  A ``"logits"`` receiver needs no pass: the base run's
   final residual stream plus the senders' change goes through the final norm and unembedding.

Rows are (path, prompt) pairs laid out like the engine's plan (column-major) and cut into passes by the
memory budget; both passes take many paths at once.  Exactness against hand-written torch hooks that
freeze every non-sender component is tested in tests/test_paths.py.  docs/paths.md gives the semantics.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..models.adapters import UnsupportedModelError, component_view, head_index, raw_tensor
from ..models.load import Model
from ..spec.data import ContrastSet
from ..spec.paths import LOGITS, Path, PathSet
from ..spec.sites import ALL, Site, SiteError, check_distinct
from . import plan as P
from .compile import (ScanError, _cached_plain, _can_skip, _check_inputs, _means, _resample_sources, _site_positions,
                      baseline_metrics, check_finite, model_shape, read_positions)
from .effects import Effects
from .unit import _Group, _run_patched, embedding_module, keep_index, logits_at, trace_kwargs

__all__ = ["scan_paths", "resolve_paths"]


# --- where things enter and leave the residual stream ---------------------------------------------
def _sequential(model: Model, layer: int) -> bool:
    """True when the block has a stream between attention and MLP (resid_mid); False for parallel blocks."""
    try:
        model.location("resid_mid", layer)
        return True
    except UnsupportedModelError:
        return False


def enters(model: Model, s: Site) -> int:
    """Stream state (0 = resid_pre of layer 0, 2l+1 = between attention and MLP of l, 2l+2 = resid_post of l)
    from which the sender's change is in the residual stream."""
    L = s.layer
    if s.component == "resid_pre":
        return 2 * L
    if s.component == "resid_mid":
        return 2 * L + 1
    if s.component in ("head_out", "attn_out"):
        return 2 * L + 1 if _sequential(model, L) else 2 * L + 2
    return 2 * L + 2  # mlp_out, resid_post


def reads(model: Model, r) -> tuple[int, tuple]:
    """The stream state a receiver reads, and the (component, layer) that holds it."""
    if r == LOGITS:
        return 2 * model.n_layers, ("resid_post", model.n_layers - 1)
    if r.component in ("q", "k", "v") or not _sequential(model, r.layer):
        return 2 * r.layer, ("resid_pre", r.layer)
    return 2 * r.layer + 1, ("resid_mid", r.layer)


def resolve_paths(model: Model, data: ContrastSet, spec, joint: bool = False) -> tuple[Path, ...]:
    """Concrete paths of `spec` (a Path, PathSet or list of Paths), checked against the model and the data."""
    if isinstance(spec, Path):
        paths = (spec,)
    elif isinstance(spec, PathSet):
        paths = spec.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys())
    else:
        paths = PathSet(explicit=tuple(spec)).resolve(model.n_layers, model.n_heads, data.lengths,
                                                      data.positions.keys())
    if joint and len(paths) > 1:
        merged = paths[0]
        for p in paths[1:]:
            merged = merged.merged(p)
        paths = (merged,)
    if len(set(paths)) != len(paths):
        raise SiteError("the path set lists the same path twice; remove one")
    for p in paths:
        check_distinct(p.senders, data)
        for s in p.senders:
            model.location(s.component, s.layer)
            if s.component == "head_out":
                _check_head_sender(model, s)
        for r in p.receivers:
            if r == LOGITS:
                continue
            model.location(r.component, r.layer)
            state, _ = reads(model, r)
            if not any(enters(model, s) <= state for s in p.senders):
                raise SiteError(f"{p.label}: no sender is upstream of receiver {r.label} (a sender must act on the "
                                "residual stream before the receiver reads it), so the path is empty; drop it or "
                                "pick earlier senders")
    return paths


def _check_head_sender(model: Model, s: Site) -> None:
    head, attn = model.location("head_out", s.layer), model.location("attn_out", s.layer)
    if attn.io == "output" and (head.module == attn.module or head.module.startswith(attn.module + ".")):
        return
    raise SiteError(f"path sender {s.label}: in the {model.family} family what attention adds to the residual "
                    f"stream ({attn.module}) is not a linear function of the per-head outputs (a norm after "
                    "attention), so a single head's share of it is undefined; use an attn_out sender instead")


# --- the senders' change to the stream ------------------------------------------------------------
def _new_values(kind: str, s: Site, j: int, pos, base, source, data, resample_from, lengths):
    """The value the intervention writes at sender `s`, per prompt: [n, T, ...] (pos None) or [n, ...]."""
    n = base.shape[0]
    rows = torch.arange(n)
    if kind == "zero":
        return torch.zeros_like(base if pos is None else base[rows, torch.as_tensor(pos)])
    if kind == "mean":
        m = _means(source, [s], [True], [pos], lengths)[0]
        return m.expand(base.shape if pos is None else base[rows, 0].shape).clone()
    if kind == "resample":
        src = torch.as_tensor(resample_from[j])
        if pos is None:
            return source[(s.component, s.layer)][src]
        return source[(s.component, s.layer)][src, torch.as_tensor(pos)[src]]
    acts = source[(s.component, s.layer)]
    return acts if pos is None else acts[rows, torch.as_tensor(pos)]


def _sender_delta(model: Model, s: Site, base_acts: torch.Tensor, new, pos) -> torch.Tensor:
    """[n, T, d_model] change of the residual stream made by sender `s` (zero outside its positions)."""
    n = base_acts.shape[0]
    rows = torch.arange(n)
    patched = base_acts.clone()
    if s.component == "head_out":
        if pos is None:
            patched[:, :, s.head] = new
        else:
            patched[rows, torch.as_tensor(pos), s.head] = new
        o_proj = model.hf.get_submodule(model.location("head_out", s.layer).module)
        dev = model.device
        with torch.no_grad():
            flat = lambda t: t.reshape(t.shape[0], t.shape[1], -1).to(dev)  # noqa: E731
            delta = (o_proj(flat(patched)) - o_proj(flat(base_acts))).float().cpu()
    else:
        if pos is None:
            patched[:] = new
        else:
            patched[rows, torch.as_tensor(pos)] = new
        delta = (patched - base_acts).float()
    if s.component in ("head_out", "attn_out", "mlp_out"):
        delta = delta * float(getattr(model.config, "residual_multiplier", 1.0) or 1.0)
    return delta


# --- passes ---------------------------------------------------------------------------------------
def _compute_pass(model: Model, tokens, keep, writes: dict, reads_: dict, skip=(), stop: bool = False) -> dict:
    """One pass: overwrite whole stream states (`writes`: (component, layer) -> [rows, T, d]) in execution
    order and read receiver components (`reads_`: (component, layer) -> list of head indices or [None]).
    ``skip[l]`` replaces the output of block l (it does not run); `stop` ends the run after the last read.
    Returns (component, layer, head) -> [rows, T, ...]."""
    import nnsight

    dev = model.device
    ops = [(k[1], P.COMPONENT_ORDER[k[0]], "w", k) for k in writes] + \
          [(k[1], P.COMPONENT_ORDER[k[0]], "r", k) for k in reads_]
    # reads of q/k/v may share one fused module: visit each module once, in execution order
    by_module: dict = {}
    for layer, order, what, k in sorted(ops, key=lambda o: (o[0], o[1], o[2] != "w")):
        loc = model.location(k[0], k[1])
        entry = by_module.setdefault((loc.module, loc.io), {"pos": (layer, order), "ops": []})
        entry["ops"].append((what, k))
    out = {}
    with torch.inference_mode():
        toks = tokens.to(dev)
        with model.nn.trace(toks, **trace_kwargs(model, keep.to(dev), toks)) as tracer:
            for layer, out_ in enumerate(skip):
                model.envoy(f"{model.adapter.layers}.{layer}").skip(out_.to(dev))
            saved = []
            for (module, io), entry in sorted(by_module.items(), key=lambda kv: kv[1]["pos"]):
                env = model.envoy(module)
                raw = raw_tensor(env.input if io == "input" else env.output)
                for what, k in entry["ops"]:
                    view = component_view(model.adapter, k[0], raw, model.n_heads, model.n_kv_heads, model.d_head)
                    if what == "w":
                        view[...] = writes[k].to(device=view.device, dtype=view.dtype)
                    else:
                        for h in reads_[k]:
                            saved.append(((k[0], k[1], h), (view if h is None else view[:, :, h]).clone()))
            saved = nnsight.save(saved)
            if stop:
                tracer.stop()
    for key, t in saved:
        out[key] = t.cpu()
    return out


def scan_paths(model, data: ContrastSet, spec, *, intervention=None, metric=None, joint: bool = False,
               batch_size: int | None = None, memory_budget="2GB", progress: bool = True, n_random: int = 0,
               cache: dict | None = None) -> Effects:
    """`scan` for path sites: ``Effects.values [n_prompts, n_paths]`` (see the module docstring)."""
    t_start = time.perf_counter()
    if n_random:
        raise ScanError("n_random (random site sets) is not available for path sites; compare paths with "
                        "ci.sites.path over a pool of senders instead")
    model, intervention, metric = _check_inputs(model, data, intervention, metric, n_random)
    paths = resolve_paths(model, data, spec, joint)
    n, T = data.n, max(data.lengths)
    kind = intervention.kind

    senders = list(dict.fromkeys(s for p in paths for s in p.senders))
    receivers = list(dict.fromkeys(r for p in paths for r in p.receivers))
    sender_keys = {(s.component, s.layer) for s in senders}
    stream_keys = {reads(model, r)[1] for r in receivers}
    read_pos = read_positions(data, metric)
    shape = model_shape(model)
    per_row = P.bytes_per_row(shape, T, len(torch.unique(read_pos)))
    fixed = P.cache_bytes(shape, n, T, len(sender_keys) + len(stream_keys) + model.n_layers)
    on_cpu = model.device.type == "cpu"
    rows_per_pass = P.rows_per_pass(len(paths) * n, per_row, fixed, P.parse_bytes(memory_budget), batch_size, on_cpu)
    base_rows = P.rows_per_pass(n, per_row, fixed, P.parse_bytes(memory_budget), batch_size, on_cpu)

    low = min((r.layer for r in receivers if r != LOGITS), default=0)
    skip = _can_skip(model)
    skip_keys = {("resid_post", l) for l in range(low)} if skip else set()
    base_run = intervention.base_run
    src_run = {"denoise": "clean", "noise": "corrupt"}.get(kind, intervention.reference)
    keys = {"clean": set(), "corrupt": set()}
    keys[base_run] |= sender_keys | stream_keys | skip_keys
    if kind != "zero":
        keys[src_run] |= sender_keys
    noise = data.corruption.draw(model, data) if getattr(data, "corruption", None) is not None else None
    emb_path = embedding_module(model) if noise is not None else None
    got = {}
    for run in ("clean", "corrupt"):
        got[run] = _cached_plain(cache, model, data.tokens(run), read_pos, sorted(keys[run]), base_rows,
                                 *((noise, emb_path) if run == "corrupt" else (None, None)))
    base_noise = (noise, emb_path) if base_run == "corrupt" else (None, None)
    (base_cache, _), (src_cache, _) = got[base_run], got[src_run]
    clean_logits, corrupt_logits = got["clean"][1], got["corrupt"][1]
    answer, wrong, clean_metric, corrupt_metric = baseline_metrics(metric, data, clean_logits, corrupt_logits)

    _check_logit_readout(model, paths, base_cache, read_pos, clean_logits if base_run == "clean" else corrupt_logits)

    # the senders' changes to the stream, each [n, T, d]
    lengths = torch.tensor(data.lengths)
    whole = any(s.position == ALL for s in senders)
    resample_from = (_resample_sources(n, len(senders), intervention.seed, data.lengths if whole else None)
                     if kind == "resample" else None)
    base_tok = data.tokens(base_run)
    recv_positions = {r: _site_positions(data, r) for r in receivers if r != LOGITS}
    deltas = []
    for j, s in enumerate(senders):
        pos = _site_positions(data, s)
        base_acts = base_cache[(s.component, s.layer)]
        new = _new_values(kind, s, j, pos, base_acts, src_cache, data, resample_from, lengths)
        if s.head is not None:
            new = new[..., s.head, :]
        deltas.append(_sender_delta(model, s, base_acts, new, pos))
    sender_index = {s: j for j, s in enumerate(senders)}
    enter = [enters(model, s) for s in senders]

    def change(c: int, prompts: np.ndarray, state: int) -> torch.Tensor:
        """Sum of the changes of path c's senders upstream of `state`, for `prompts`: [rows, T, d]."""
        total = torch.zeros(len(prompts), T, model.d_model)
        for s in paths[c].senders:
            j = sender_index[s]
            if enter[j] <= state:
                total += deltas[j][torch.as_tensor(prompts)]
        return total

    rows_all = np.arange(len(paths) * n)
    cols_all, prompts_all = rows_all // n, rows_all % n
    values = np.full(len(paths) * n, np.nan)
    from tqdm.auto import tqdm
    bar = tqdm(total=len(rows_all), disable=not progress, desc=f"paths {len(paths)} x {n} prompts", unit="row")
    n_passes = 0
    for r0, r1 in P.chunks(len(rows_all), rows_per_pass):
        cols, prompts = cols_all[r0:r1], prompts_all[r0:r1]
        rp = read_pos[prompts]
        keep, inverse = keep_index(rp)
        wrong_r = wrong[prompts] if wrong is not None else None
        logit_rows = np.array([paths[c].receivers == (LOGITS,) for c in cols])
        picked = torch.zeros(len(cols), clean_logits.shape[1])
        if logit_rows.any():
            from ..lens import final_logits
            idx = np.flatnonzero(logit_rows)
            state, key = reads(model, LOGITS)
            resid = base_cache[key][prompts[idx]].float().clone()
            for k, i in enumerate(idx):
                resid[k] += change(cols[i], prompts[i:i + 1], state)[0]
            picked[idx] = final_logits(model, resid[torch.arange(len(idx)), rp[idx]].to(base_cache[key].dtype)).float().cpu()
        other = np.flatnonzero(~logit_rows)
        if other.size:
            picked[other] = _receiver_rows(model, paths, cols[other], prompts[other], base_cache, change,
                                           base_tok, read_pos, skip_keys, recv_positions, base_noise)
            n_passes += 2
        values[r0:r1] = metric.compute(picked, answer[prompts], wrong_r, clean_logits[prompts]).numpy()
        bar.update(r1 - r0)
    bar.close()

    table = values.reshape(len(paths), n).T
    check_finite(table, "the path-patched runs")
    base = corrupt_metric if base_run == "corrupt" else clean_metric
    target = clean_metric if intervention.target_run == "clean" else corrupt_metric
    meta = {"rows_per_pass": rows_per_pass, "n_passes": n_passes, "seconds": time.perf_counter() - t_start,
            "device": str(model.device), "model": model.name or type(model.hf).__name__,
            "memory_budget": P.parse_bytes(memory_budget), "n_random": 0, "paths": True}
    if getattr(spec, "selected_on", None):
        meta["selected_on"] = dict(spec.selected_on)
    return Effects(values=table.copy(), clean=clean_metric, corrupt=corrupt_metric, sites=tuple(paths),
                   base=base.copy(), target=target.copy(), joint=False, intervention=intervention, metric=metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters), meta=meta)


def _receiver_rows(model: Model, paths, cols, prompts, base_cache, change, base_tok, read_pos, skip_keys,
                   positions, base_noise) -> torch.Tensor:
    """Logits at the read positions for rows whose paths end in heads/MLPs: the compute pass, then the final pass."""
    prompts_t = torch.as_tensor(prompts)
    rp = read_pos[prompts]
    keep, inverse = keep_index(rp)
    needed, reads_ = {}, {}
    for c in np.unique(cols):
        for r in paths[c].receivers:
            state, key = reads(model, r)
            needed[key] = state
            h = None if r.head is None else head_index(r.component, r.head, model.n_heads, model.n_kv_heads)
            lst = reads_.setdefault((r.component, r.layer), [])
            if h not in lst:
                lst.append(h)
    writes = {}
    for key, state in needed.items():
        new = base_cache[key][prompts_t].float().clone()
        for c in np.unique(cols):
            sel = np.flatnonzero(cols == c)
            new[sel] += change(c, prompts[sel], state)
        writes[key] = new
    toks = base_tok[prompts_t]
    recomputed = _compute_pass(model, toks, keep, writes, reads_)

    # the final pass: the base run with every receiver's recomputed value written in
    groups: dict = {}
    for c in np.unique(cols):
        sel = np.flatnonzero(cols == c)
        for r in paths[c].receivers:
            h = None if r.head is None else head_index(r.component, r.head, model.n_heads, model.n_kv_heads)
            vals = recomputed[(r.component, r.layer, h)][sel]
            pos = positions[r]
            if pos is not None:
                pos = torch.as_tensor(pos[prompts[sel]])
                vals = vals[torch.arange(len(sel)), pos]
            loc = model.location(r.component, r.layer)
            g = groups.setdefault((loc.module, loc.io), [(r.layer, P.COMPONENT_ORDER[r.component]),
                                                          _Group(loc.module, loc.io, [])])
            g[0] = min(g[0], (r.layer, P.COMPONENT_ORDER[r.component]))
            g[1].writes.append((r.component, torch.as_tensor(sel), pos, h, vals))
    ordered = [g for _, g in sorted(groups.values(), key=lambda x: x[0])]
    low = min(r.layer for c in np.unique(cols) for r in paths[c].receivers)
    skip = [base_cache[("resid_post", l)][prompts_t] for l in range(low) if ("resid_post", l) in skip_keys]
    noise, emb_path = base_noise
    logits = _run_patched(model, toks, keep, ordered, skip, None if noise is None else noise[prompts_t], emb_path)
    return logits_at(logits, keep, inverse, rp).float()


def _check_logit_readout(model: Model, paths, base_cache, read_pos, base_logits) -> None:
    """Refuse a "logits" receiver where the final norm + unembedding do not reproduce the model's own logits
    (e.g. logit soft-capping or scaling after the unembedding): the direct path would be silently wrong."""
    if not any(p.receivers == (LOGITS,) for p in paths):
        return
    from ..lens import final_logits
    _, key = reads(model, LOGITS)
    resid = base_cache[key]
    mine = final_logits(model, resid[torch.arange(resid.shape[0]), read_pos]).float().cpu()
    scale = base_logits.abs().max().clamp(min=1.0)
    if not torch.allclose(mine, base_logits, atol=1e-4 * float(scale), rtol=1e-4):
        raise ScanError(f"'logits' receivers: this {model.family} model's logits are not final_norm + unembedding "
                        "of its last residual stream (logit scaling or soft-capping?), so the direct path to the "
                        "logits cannot be computed exactly; use head or MLP receivers")
