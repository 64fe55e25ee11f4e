"""Execute a scan: cached clean/corrupt runs, then batched patched runs through nnsight.

`scan()` is the public entry point.  Each forward pass holds many (column, prompt) rows;
every row is the base prompt (corrupt for denoising, clean otherwise) with its column's
sites overwritten in place through nnsight.  The metric is kept for every row.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models.adapters import component_view, head_index, raw_tensor
from ..models.load import Model, load_model
from ..spec.data import ContrastSet, DataError
from ..spec.interventions import Intervention, patch
from ..spec.metrics import Metric, MetricError, logit_diff
from ..spec.sites import ALL, Site, SiteError, SiteSet
from . import plan
from .effects import Effects


class ScanError(ValueError):
    """A scan that cannot run as asked; the message says why and what to change."""


@dataclass
class _Group:
    """All writes to one module's input/output in one pass."""

    module: str
    io: str
    writes: list  # (component, rows, positions or None for all, head or None, values)


def _trace_kwargs(model: Model, keep: torch.Tensor) -> dict:
    """Compute logits only at the positions the metric reads, where the model supports it."""
    kwargs = {}
    if "logits_to_keep" in inspect.signature(model.hf.forward).parameters:
        kwargs["logits_to_keep"] = keep
    if model.remote:
        kwargs["remote"] = True
    return kwargs


def _keep_index(read_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique read positions, and for each row the index of its position among them."""
    keep, inverse = torch.unique(read_pos, return_inverse=True)
    return keep, inverse


def _logits_at(logits: torch.Tensor, keep: torch.Tensor, inverse: torch.Tensor, read_pos: torch.Tensor):
    """Pick each row's logits at its read position, whether or not the model honoured logits_to_keep."""
    rows = torch.arange(logits.shape[0])
    if logits.shape[1] == keep.shape[0]:
        return logits[rows, inverse]
    return logits[rows, read_pos]


def _module_of(model: Model, key: tuple[str, int]):
    return model.location(key[0], key[1])


def _run_plain(model: Model, tokens: torch.Tensor, read_pos: torch.Tensor, keys: Sequence[tuple[str, int]],
               rows_per_pass: int) -> tuple[dict, torch.Tensor]:
    """Unpatched runs in chunks: cached canonical activations for `keys` and logits at `read_pos`."""
    import nnsight

    keys = sorted(keys, key=lambda k: (k[1], plan.COMPONENT_ORDER[k[0]]))  # modules in execution order
    cache = {k: [] for k in keys}
    all_logits = []
    for start, stop in plan.chunks(tokens.shape[0], rows_per_pass):
        toks = tokens[start:stop].to(model.device)
        rp = read_pos[start:stop]
        keep, inverse = _keep_index(rp)
        locs = [(k, _module_of(model, k)) for k in keys]
        with torch.inference_mode():
            with model.nn.trace(toks, **_trace_kwargs(model, keep.to(model.device))):
                saved = []
                for key, loc in locs:
                    env = model.envoy(loc.module)
                    raw = raw_tensor(env.input if loc.io == "input" else env.output)
                    view = component_view(model.adapter, key[0], raw, model.n_heads, model.n_kv_heads, model.d_head)
                    saved.append(view.clone())
                saved = nnsight.save(saved)
                logits = nnsight.save(model.nn.output.logits)
        for (key, _), t in zip(locs, saved):
            cache[key].append(t.cpu())
        all_logits.append(_logits_at(logits.cpu(), keep, inverse, rp).float())
    return {k: torch.cat(v) for k, v in cache.items()}, torch.cat(all_logits)


def _can_skip(model: Model) -> bool:
    """Whether a block can be skipped with its cached output: its output must be a plain tensor
    (transformers >= 5; older versions return tuples), and the model must run locally."""
    if model.remote:
        return False
    if not hasattr(model, "_block_output_is_tensor"):
        seen = {}
        block = model.hf.get_submodule(f"{model.adapter.layers}.0")
        hook = block.register_forward_hook(lambda m, a, o: seen.update(tensor=isinstance(o, torch.Tensor)))
        try:
            with torch.no_grad():
                model.hf(torch.zeros(1, 1, dtype=torch.long, device=model.device))
        finally:
            hook.remove()
        model._block_output_is_tensor = seen.get("tensor", False)
    return model._block_output_is_tensor


def _cached_plain(cache: dict | None, model: Model, tokens: torch.Tensor, read_pos: torch.Tensor, keys,
                  rows_per_pass: int) -> tuple[dict, torch.Tensor]:
    """`_run_plain`, reusing activations and logits already in `cache` and adding what was missing."""
    if cache is None:
        return _run_plain(model, tokens, read_pos, keys, rows_per_pass)
    ident = (id(model), tokens.numpy().tobytes(), tuple(tokens.shape), read_pos.numpy().tobytes())
    entry = cache.setdefault(ident, {"acts": {}, "logits": None})
    missing = [k for k in keys if k not in entry["acts"]]
    if missing or entry["logits"] is None:
        acts, logits = _run_plain(model, tokens, read_pos, missing, rows_per_pass)
        entry["acts"].update(acts)
        entry["logits"] = logits
    return {k: entry["acts"][k] for k in keys}, entry["logits"]


def _resolve_sites(model: Model, data: ContrastSet, sites) -> tuple[Site, ...]:
    if isinstance(sites, SiteSet):
        resolved = sites.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys())
    elif isinstance(sites, Site):
        resolved = (sites,)
    else:
        resolved = SiteSet(explicit=tuple(sites)).resolve(model.n_layers, model.n_heads, data.lengths,
                                                          data.positions.keys())
    if not resolved:
        raise SiteError("the site set is empty")
    for s in resolved:
        model.location(s.component, s.layer)  # clear error for components the architecture lacks
    if len(set(resolved)) != len(resolved):
        raise SiteError("the site set lists the same site twice; remove the duplicates")
    return resolved


def _random_pool(model: Model, sites: tuple[Site, ...]) -> list[Site]:
    """Default pool for random site sets: the same component(s) and position(s) at every layer (and head)."""
    pool = []
    for comp, pos in sorted({(s.component, str(s.position)) for s in sites}):
        position = next(s.position for s in sites if s.component == comp and str(s.position) == pos)
        for layer in range(model.n_layers):
            if comp in ("head_out", "q", "k", "v"):
                pool += [Site(comp, layer, h, position) for h in range(model.n_heads)]
            else:
                pool.append(Site(comp, layer, None, position))
    return pool


def _positions(data: ContrastSet, site: Site) -> np.ndarray | None:
    """Absolute token index per prompt for `site` (None for all positions)."""
    if site.position == ALL:
        return None
    return np.array([data.position_index(site.position, i) for i in range(data.n)])


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, fingerprint: str, values: np.ndarray, done: np.ndarray) -> None:
    """Write atomically: a killed run never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, fingerprint=np.array(fingerprint), values=values, done=done)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: str, n_rows: int, n_passes: int):
    if not path.exists():
        return None
    with np.load(path) as z:
        if str(z["fingerprint"]) != fingerprint or z["values"].shape != (n_rows,) or z["done"].shape != (n_passes,):
            raise ScanError(f"checkpoint {path} belongs to a different scan (other data, sites, intervention, metric "
                            "or batch size); delete it or choose another checkpoint path")
        return z["values"].copy(), z["done"].copy()


def scan(model, data: ContrastSet, sites, *, intervention: Intervention | None = None, metric: Metric | None = None,
         joint: bool = False, batch_size: int | None = None, memory_budget="2GB", progress: bool = True,
         n_random: int = 0, random_pool=None, seed: int = 0, checkpoint: str | os.PathLike | None = None,
         cache: dict | None = None) -> Effects:
    """Intervene on every site (or all at once with ``joint=True``) and keep the metric per prompt.

    Returns `Effects` with ``values [n_prompts, n_columns]`` and the clean/corrupt baselines.
    ``n_random > 0`` also runs that many random site sets of the same size (for `claims.beats_random`),
    drawn with `seed` from `random_pool` (default: the same components/positions at every layer/head).
    ``checkpoint`` names a file where finished passes are saved atomically; rerunning the same scan
    with it resumes where a killed run stopped.  ``cache`` (a dict the caller keeps) shares the unpatched
    clean/corrupt runs between scans of the same model and data (`run_all` uses it).
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    intervention = intervention or patch("denoise")
    metric = metric or logit_diff()
    if not isinstance(model, Model):
        model = load_model(model)
    if not isinstance(data, ContrastSet):
        raise ScanError(f"data must be a ContrastSet, got {type(data).__name__}; build one with "
                        "ContrastSet.from_tokens(...) or ContrastSet.from_text(tokenizer, ...)")
    if not isinstance(intervention, Intervention):
        raise ScanError("intervention must come from ci.patch(...) or ci.ablate(...)")
    if not isinstance(metric, Metric):
        raise ScanError("metric must come from ci.metrics (e.g. ci.metrics.logit_diff())")
    data.check_vocab(model.vocab_size)
    if metric.needs_wrong and data.wrong is None:
        raise MetricError("logit_diff needs wrong answers: pass wrong=... to the ContrastSet, or use metrics.logprob()")
    site_list = _resolve_sites(model, data, sites)
    n = data.n
    if n_random and n_random < 0:
        raise ScanError("n_random must be >= 0")

    # --- columns: which sites are intervened on together --------------------------------------
    columns: list[tuple[int, ...]] = [tuple(range(len(site_list)))] if joint else [(j,) for j in range(len(site_list))]
    all_sites = list(site_list)
    if n_random:
        pool = _resolve_sites(model, data, random_pool) if random_pool is not None else _random_pool(model, site_list)
        others = [s for s in pool if s not in set(site_list)]
        if len(others) < len(site_list):
            others = list(pool)
        if len(others) < len(site_list):
            raise ScanError(f"the random pool has {len(others)} sites, fewer than the {len(site_list)} in the set")
        rng = np.random.default_rng(seed)
        index = {s: i for i, s in enumerate(all_sites)}
        for s in others:
            if s not in index:
                index[s] = len(all_sites)
                all_sites.append(s)
        for _ in range(n_random):
            pick = rng.choice(len(others), size=len(site_list), replace=False)
            columns.append(tuple(sorted(index[others[p]] for p in pick)))
    n_main = 1 if joint else len(site_list)
    member = np.zeros((len(columns), len(all_sites)), dtype=bool)
    for c, cols in enumerate(columns):
        member[c, list(cols)] = True
    used = member.any(0)

    # --- tokens, read positions, memory plan --------------------------------------------------
    clean_tok, corrupt_tok = data.tokens("clean"), data.tokens("corrupt")
    T = clean_tok.shape[1]
    try:
        read_pos = torch.tensor([data.position_index(metric.position, i) for i in range(n)])
    except DataError as e:
        raise MetricError(f"the metric reads at position {metric.position!r}: {e}") from None
    answer = torch.tensor(data.answer)
    wrong = torch.tensor(data.wrong) if data.wrong is not None else None
    keys = sorted({(s.component, s.layer) for s, u in zip(all_sites, used) if u})
    cfg = model.config
    shape = plan.ModelShape(model.n_layers, model.n_heads, model.d_model,
                            int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
                                or 4 * model.d_model),
                            model.vocab_size, next(model.hf.parameters()).element_size())
    n_keep = len(torch.unique(read_pos))
    per_row = plan.bytes_per_row(shape, T, n_keep)
    fixed = plan.cache_bytes(shape, n, T, len(keys) + model.n_layers - 1)  # + block outputs for skipping
    budget = plan.parse_bytes(memory_budget)
    total_rows = len(columns) * n
    on_cpu = model.device.type == "cpu"
    rows = plan.rows_per_pass(total_rows, per_row, fixed, budget, batch_size, on_cpu)
    base_rows = plan.rows_per_pass(n, per_row, fixed, budget, batch_size, on_cpu)

    # Each pass starts at its lowest patched layer: blocks below it are skipped and their outputs
    # taken from the unpatched base run (identical there), which saves most of the forward cost.
    row_col, row_prompt = plan.make_rows(len(columns), n)
    spans = plan.chunks(total_rows, rows)
    column_low = np.array([min(all_sites[j].layer for j in cols) for cols in columns])
    pass_low = [int(column_low[row_col[r0:r1]].min()) for r0, r1 in spans]
    skip_keys = [("resid_post", layer) for layer in range(max(pass_low))] if _can_skip(model) else []

    # --- unpatched runs (baselines + caches) --------------------------------------------------
    ref_run = intervention.reference
    need_clean_cache = intervention.kind == "denoise" or (intervention.kind in ("mean", "resample") and ref_run == "clean")
    need_corrupt_cache = intervention.kind == "noise" or (intervention.kind in ("mean", "resample") and ref_run == "corrupt")
    clean_keys = (keys if need_clean_cache else []) + (skip_keys if intervention.base_run == "clean" else [])
    corrupt_keys = (keys if need_corrupt_cache else []) + (skip_keys if intervention.base_run == "corrupt" else [])
    clean_cache, clean_logits = _cached_plain(cache, model, clean_tok, read_pos, sorted(set(clean_keys)), base_rows)
    corrupt_cache, corrupt_logits = _cached_plain(cache, model, corrupt_tok, read_pos, sorted(set(corrupt_keys)),
                                                  base_rows)
    base_cache = corrupt_cache if intervention.base_run == "corrupt" else clean_cache
    clean_metric = metric.compute(clean_logits, answer, wrong, clean_logits).numpy()
    corrupt_metric = metric.compute(corrupt_logits, answer, wrong, clean_logits).numpy()
    _check_finite(clean_metric, "the clean run")
    _check_finite(corrupt_metric, "the corrupt run")

    source = {"denoise": clean_cache, "noise": corrupt_cache}.get(intervention.kind)
    if intervention.kind in ("mean", "resample"):
        source = clean_cache if ref_run == "clean" else corrupt_cache
    base_tok = corrupt_tok if intervention.base_run == "corrupt" else clean_tok
    positions = [(_positions(data, s) if u else None) for s, u in zip(all_sites, used)]
    lengths = torch.tensor(data.lengths)
    means = _means(source, all_sites, used, positions, lengths) if intervention.kind == "mean" else None
    resample_from = _resample_sources(n, len(columns), intervention.seed) if intervention.kind == "resample" else None

    # --- patched passes ------------------------------------------------------------------------
    values = np.full(total_rows, np.nan)
    done = np.zeros(len(spans), dtype=bool)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _fingerprint(data.to_dict(), [s.to_dict() for s in all_sites], columns, intervention.to_dict(),
                               metric.to_dict(), rows, str(model.name), model.n_layers, model.d_model)
    if ckpt is not None:
        loaded = _load_checkpoint(ckpt, fingerprint, total_rows, len(spans))
        if loaded is not None:
            values, done = loaded
    last_save = time.monotonic()
    bar = tqdm(total=len(spans), desc=f"scan {len(columns)} col x {n} prompts", disable=not progress,
               initial=int(done.sum()), unit="pass")
    for p, (r0, r1) in enumerate(spans):
        if done[p]:
            continue
        cols, prompts = row_col[r0:r1], row_prompt[r0:r1]
        groups = _build_groups(model, all_sites, member, cols, prompts, positions, intervention, source, means,
                               resample_from)
        rp = read_pos[prompts]
        keep, inverse = _keep_index(rp)
        skip = [base_cache[k][prompts] for k in skip_keys[:pass_low[p]]]  # fresh copies: writes can't leak
        logits = _run_patched(model, base_tok[prompts], keep, groups, skip)
        picked = _logits_at(logits, keep, inverse, rp)
        values[r0:r1] = metric.compute(picked, answer[prompts], wrong[prompts] if wrong is not None else None,
                                       clean_logits[prompts]).numpy()
        done[p] = True
        bar.update(1)
        if ckpt is not None and (time.monotonic() - last_save > 2 or p == len(spans) - 1):
            _save_checkpoint(ckpt, fingerprint, values, done)
            last_save = time.monotonic()
    bar.close()
    if ckpt is not None:
        _save_checkpoint(ckpt, fingerprint, values, done)

    table = values.reshape(len(columns), n).T  # [n_prompts, n_columns]
    _check_finite(table, "the patched runs")
    base = corrupt_metric if intervention.base_run == "corrupt" else clean_metric
    target = clean_metric if intervention.target_run == "clean" else corrupt_metric
    meta = {"rows_per_pass": rows, "n_passes": len(spans), "seconds": time.perf_counter() - t_start,
            "device": str(model.device), "model": model.name or type(model.hf).__name__,
            "memory_budget": budget, "n_random": n_random, "seed": seed}
    return Effects(values=table[:, :n_main].copy(), clean=clean_metric, corrupt=corrupt_metric,
                   sites=tuple(site_list), base=base.copy(), target=target.copy(), joint=joint,
                   intervention=intervention, metric=metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters),
                   random_values=table[:, n_main:].copy() if n_random else None, meta=meta)


def _check_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise MetricError(f"the metric is NaN or infinite in {where} (first entries at {idx}); check the model's "
                          "dtype (float16 overflow?) and the answer tokens")


def _means(source: dict, sites, used, positions, lengths: torch.Tensor) -> dict:
    """Mean activation over reference prompts, per site: [d] for one position, [T, d] for all positions."""
    out = {}
    for j, (s, u) in enumerate(zip(sites, used)):
        if not u:
            continue
        acts = source[(s.component, s.layer)]
        if positions[j] is None:
            T = acts.shape[1]
            mask = (torch.arange(T)[None, :] < lengths[:, None]).to(acts.dtype)
            mask = mask.reshape(mask.shape + (1,) * (acts.ndim - 2))
            out[j] = (acts * mask).sum(0) / mask.sum(0).clamp(min=1)
        else:
            out[j] = acts[torch.arange(acts.shape[0]), torch.as_tensor(positions[j])].mean(0)
    return out


def _resample_sources(n: int, n_columns: int, seed: int) -> np.ndarray:
    """For each column and prompt, another prompt to take the activation from (never itself when n > 1)."""
    rng = np.random.default_rng(seed)
    if n == 1:
        raise ScanError("resample ablation needs at least 2 prompts (it takes activations from another prompt)")
    shift = rng.integers(1, n, size=(n_columns, n))
    return (np.arange(n)[None, :] + shift) % n


def _build_groups(model: Model, sites, member, cols, prompts, positions, intervention, source, means, resample_from):
    """The in-place writes of one pass, grouped by module in execution order."""
    groups: dict[tuple, _Group] = {}
    present = np.flatnonzero(member[np.unique(cols)].any(0))
    for j in present:
        s = sites[j]
        local = np.flatnonzero(member[cols, j])
        if local.size == 0:
            continue
        pr = prompts[local]
        head = None if s.head is None else head_index(s.component, s.head, model.n_heads, model.n_kv_heads)
        pos = None if positions[j] is None else positions[j][pr]
        kind = intervention.kind
        if kind == "zero":
            vals = 0.0
        elif kind == "mean":
            vals = means[j] if head is None else means[j][..., head, :]
        else:
            acts = source[(s.component, s.layer)]
            src_prompt = pr if kind in ("denoise", "noise") else resample_from[cols[local], pr]
            if pos is None:
                vals = acts[src_prompt]
            elif kind == "resample":
                vals = acts[src_prompt, positions[j][src_prompt]]
            else:
                vals = acts[src_prompt, pos]
            if head is not None:
                vals = vals[..., head, :]
        loc = model.location(s.component, s.layer)
        key = (s.layer, plan.COMPONENT_ORDER[s.component], loc.module, loc.io)
        groups.setdefault(key, _Group(loc.module, loc.io, [])).writes.append(
            (s.component, torch.as_tensor(local), None if pos is None else torch.as_tensor(pos), head, vals))
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1]))]


def _run_patched(model: Model, tokens: torch.Tensor, keep: torch.Tensor, groups: list,
                 skip: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """One forward pass with all writes of `groups` applied in place; logits at the kept positions.

    ``skip[l]`` replaces the output of block ``l`` (its forward does not run).
    """
    import nnsight

    dev = model.device
    skip = [t.to(dev) for t in skip]
    with torch.inference_mode():
        with model.nn.trace(tokens.to(dev), **_trace_kwargs(model, keep.to(dev))):
            for layer, out in enumerate(skip):
                model.envoy(f"{model.adapter.layers}.{layer}").skip(out)
            for g in groups:
                env = model.envoy(g.module)
                raw = raw_tensor(env.input if g.io == "input" else env.output)
                for component, rows, pos, head, vals in g.writes:
                    view = component_view(model.adapter, component, raw, model.n_heads, model.n_kv_heads,
                                          model.d_head)
                    if isinstance(vals, torch.Tensor):
                        vals = vals.to(device=view.device, dtype=view.dtype)
                    rows_d = rows.to(dev)
                    if pos is None:
                        if head is None:
                            view[rows_d] = vals
                        else:
                            view[rows_d, :, head] = vals
                    elif head is None:
                        view[rows_d, pos.to(dev)] = vals
                    else:
                        view[rows_d, pos.to(dev), head] = vals
            logits = nnsight.save(model.nn.output.logits)
    return logits.cpu()
