"""Compile a scan: check its inputs, lay it out as a `Plan` of units, and prepare what every unit reads.

`make_plan` validates everything and returns a `Plan` (pure data, no forward passes beyond a
one-token probe of the block output type).  `prepare` runs the unpatched clean and corrupt passes
once and returns a `Context`: the cached source activations, block outputs for skipping, baselines
and per-row bookkeeping that `unit.run_unit` needs.  Executors ship the context to their workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.adapters import component_view, raw_tensor
from ..models.load import Model, load_model
from ..spec.checks import check_usable
from ..spec.data import ContrastSet, DataError
from ..spec.interventions import Intervention, patch
from ..spec.metrics import Metric, MetricError, logit_diff
from ..spec.schema import Bool, NonNegInt, Seed, check_value
from ..spec.sites import ALL, Site, SiteError, SiteSet, check_distinct
from ..stats.randomization import random_subsets
from . import plan as P
from .fingerprint import digest, tensor_checksum, tokenizer_hash, weights_hash
from .prefix import base_kv
from .prefix import supported as prefix_supported
from .unit import add_noise, embedding_module, keep_index, logits_at, trace_kwargs


class ScanError(ValueError):
    """A scan that cannot run as asked; the message says why and what to change.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> try:
        ...     ci.scan(model, data, ci.sites.head_out(), intervention="noise", progress=False)
        ... except ci.ScanError as e:
        ...     print(e)
        intervention must come from ci.patch(...) or ci.ablate(...)
    """


# --- checks and sites ------------------------------------------------------------------------------
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
        if getattr(s, "feature", None) is not None:  # feature sites (spec.features): the feature fits the width
            s.feature.check(model.d_head if s.head is not None else model.d_model, s.label)
    check_distinct(resolved, data)  # aliases ("end" and -1) resolved per prompt before comparing
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


def random_site_sets(n_pool: int, size: int, n_sets: int, seed: int) -> list[tuple[int, ...]]:
    """`n_sets` random sets of `size` distinct indices into a pool of `n_pool` sites (seeded).

    The one place random site sets for `beats_random` are drawn; everything else only indexes them.
    """
    # distinct sets, every one of them when there are no more than n_sets (causalinterp.stats.randomization)
    return list(random_subsets(n_pool, size, n_sets, np.random.default_rng(seed)).sets)


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
                one = torch.zeros(1, 1, dtype=torch.long, device=model.device)
                model.hf(one, attention_mask=torch.ones_like(one))
        finally:
            hook.remove()
        model._block_output_is_tensor = seen.get("tensor", False)
    return model._block_output_is_tensor


def model_shape(model: Model) -> P.ModelShape:
    cfg = model.config
    d_mlp = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * model.d_model)
    return P.ModelShape(model.n_layers, model.n_heads, model.d_model, d_mlp, model.vocab_size,
                        next(model.hf.parameters()).element_size())


def model_identity(model: Model) -> dict:
    """What identifies a model's numbers: its weights and tokenizer hashes, plus readable facts."""
    return {"name": model.name or type(model.hf).__name__, "weights": weights_hash(model),
            "tokenizer": tokenizer_hash(model.tokenizer), "family": model.family, "n_layers": model.n_layers,
            "dtype": str(next(model.hf.parameters()).dtype), "remote": bool(model.remote)}


def read_positions(data: ContrastSet, metric: Metric) -> torch.Tensor:
    try:
        return torch.tensor([data.position_index(metric.position, i) for i in range(data.n)])
    except DataError as e:
        raise MetricError(f"the metric reads at position {metric.position!r}: {e}") from None


def _check_inputs(model, data, intervention, metric, n_random):
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
    cfg = model.config
    data.check_context(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None))
    if metric.needs_wrong and data.wrong is None:
        raise MetricError("logit_diff needs wrong answers: pass wrong=... to the ContrastSet, or use metrics.logprob()")
    check_usable(data, needs_wrong=metric.needs_wrong)   # duplicated prompts, answer == wrong
    check_value(NonNegInt, n_random, ScanError, "n_random")
    if intervention.kind == "resample" and data.n == 1:
        raise ScanError("resample ablation needs at least 2 prompts (it takes activations from another prompt)")
    return model, intervention, metric


# --- the plan --------------------------------------------------------------------------------------
def make_plan(model, data: ContrastSet, sites, *, intervention: Intervention | None = None,
              metric: Metric | None = None, joint: bool = False, n_random: int = 0, random_pool=None,
              seed: int = 0, memory_budget="2GB", batch_size: int | None = None,
              reuse_prefix: bool = False, columns=None) -> P.Plan:
    """Lay a scan out as a `Plan`: validated inputs, columns, and independent units with content hashes.

    Same arguments as `scan` (which calls this).  Nothing is computed beyond a one-token probe;
    the plan is pure data (``plan.to_json()``) and says what each unit costs in FLOPs and bytes.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> p = ci.plan(model, data, ci.sites.head_out(positions="end"))      # nothing computed yet
        >>> p.n_main                                                           # 2 layers x 4 heads
        8
    """
    model, intervention, metric = _check_inputs(model, data, intervention, metric, n_random)
    seed = check_value(Seed, seed, ScanError, "seed")
    joint = check_value(Bool, joint, ScanError, "joint")
    reuse_prefix = check_value(Bool, reuse_prefix, ScanError, "reuse_prefix")
    site_list = _resolve_sites(model, data, sites)
    n = data.n

    # columns: which sites are intervened on together
    if columns is not None:  # explicit site groups (e.g. circuits: the complement of each circuit, jointly)
        columns = _explicit_columns(columns, len(site_list), joint, n_random)
    else:
        columns = [tuple(range(len(site_list)))] if joint else [(j,) for j in range(len(site_list))]
    all_sites = list(site_list)
    if n_random:
        if random_pool is None and any(getattr(s, "feature", None) is not None for s in site_list):
            raise ScanError("random site sets for feature sites need random_pool=...: the default pool is whole "
                            "activations at every layer, not features; e.g. random subspaces of the same dimension "
                            "at the same place: ci.features.random_subspace_sites(site, k, d, n, seed)")
        pool = _resolve_sites(model, data, random_pool) if random_pool is not None else _random_pool(model, site_list)
        others = [s for s in pool if s not in set(site_list)]
        if len(others) < len(site_list):
            others = list(pool)
        if len(others) < len(site_list):
            raise ScanError(f"the random pool has {len(others)} sites, fewer than the {len(site_list)} in the set")
        index = {s: i for i, s in enumerate(all_sites)}
        for s in others:
            if s not in index:
                index[s] = len(all_sites)
                all_sites.append(s)
        for picks in random_site_sets(len(others), len(site_list), n_random, seed):
            columns.append(tuple(sorted(index[others[p]] for p in picks)))
    n_main = len(columns) if n_random == 0 else (1 if joint else len(site_list))

    # memory plan
    read_pos = read_positions(data, metric)
    T = max(data.lengths)
    used = sorted({j for cols in columns for j in cols})
    keys = {(all_sites[j].component, all_sites[j].layer) for j in used}
    shape = model_shape(model)
    n_keep = len(torch.unique(read_pos))
    per_row = P.bytes_per_row(shape, T, n_keep)
    fixed = P.cache_bytes(shape, n, T, len(keys) + model.n_layers - 1)  # + block outputs for skipping
    budget = P.parse_bytes(memory_budget)
    total_rows = len(columns) * n
    on_cpu = model.device.type == "cpu"
    rows = P.rows_per_pass(total_rows, per_row, fixed, budget, batch_size, on_cpu)
    base_rows = P.rows_per_pass(n, per_row, fixed, budget, batch_size, on_cpu)
    skip = _can_skip(model)

    # units: each pass starts at its lowest patched layer (blocks below it are skipped)
    ident = model_identity(model)
    data_hash = digest(data.to_dict())
    key = digest("scan", ident, data_hash, [s.to_dict() for s in all_sites], columns, intervention.to_dict(),
                 metric.to_dict(), skip)
    column_low = np.array([min(all_sites[j].layer for j in cols) for cols in columns])
    row_col, _ = P.make_rows(len(columns), n)
    units = []
    for i, (r0, r1) in enumerate(P.chunks(total_rows, rows)):
        low = int(column_low[row_col[r0:r1]].min()) if skip else 0
        units.append(P.Unit(i, digest(key, r0, r1), r0, r1, low,
                            P.unit_flops(shape, r1 - r0, T, low, n_keep), P.unit_bytes(shape, r1 - r0, T, low, n_keep)))
    return P.Plan(key=key, model=ident, data_hash=data_hash, n_prompts=n, seq_len=T, sites=tuple(all_sites),
                  columns=tuple(columns), n_main=n_main, joint=joint, n_random=n_random, seed=seed,
                  intervention=intervention.to_dict(), metric=metric.to_dict(), rows_per_pass=rows,
                  base_rows=base_rows, memory_budget=budget, skip_blocks=skip, units=tuple(units),
                  reuse_prefix=reuse_prefix and prefix_supported(model))


def _explicit_columns(columns, n_sites: int, joint: bool, n_random: int) -> list[tuple[int, ...]]:
    """Validated explicit columns: non-empty tuples of distinct site indices (no joint=, no n_random=)."""
    if joint or n_random:
        raise ScanError("columns= lists the site groups itself: do not combine it with joint=True or n_random")
    out = []
    for c, col in enumerate(columns):
        col = tuple(sorted(int(j) for j in col))
        if not col or len(set(col)) != len(col) or not all(0 <= j < n_sites for j in col):
            raise ScanError(f"columns[{c}] = {col!r}: each column is a non-empty set of distinct site indices in "
                            f"0..{n_sites - 1}")
        out.append(col)
    if not out:
        raise ScanError("columns= is empty")
    return out


# --- the context every unit reads ------------------------------------------------------------------
@dataclass
class Context:
    """Everything a unit needs besides the model: built once by `prepare`, shipped to every worker."""

    key: str
    sites: tuple
    member: np.ndarray          # [n_columns, n_sites] bool
    positions: list             # per site: absolute token index per prompt, or None (all positions)
    read_pos: torch.Tensor      # [n_prompts]
    answer: torch.Tensor
    wrong: torch.Tensor | None
    clean_logits: torch.Tensor  # [n_prompts, vocab] at the read positions
    base_tok: torch.Tensor      # [n_prompts, T] the run intervened on
    source: dict | None         # (component, layer) -> cached activations written by the intervention
    base_cache: dict            # ("resid_post", layer) -> block outputs of the base run (for skipping)
    means: dict | None
    resample_from: np.ndarray | None
    intervention: Intervention
    metric: Metric
    n_prompts: int
    clean_metric: np.ndarray
    corrupt_metric: np.ndarray
    base_noise: torch.Tensor | None = None   # [n_prompts, T, d] embedding noise of the base run (causal tracing)
    emb_path: str | None = None              # the input-embedding module the noise is added to
    prefix_kv: list | None = None            # per layer (keys, values) of the base run, for prefix reuse


def _run_plain(model: Model, tokens: torch.Tensor, read_pos: torch.Tensor, keys, rows_per_pass: int,
               noise: torch.Tensor | None = None, emb_path: str | None = None):
    """Unpatched runs in chunks: cached canonical activations for `keys` and logits at `read_pos`
    (with `noise` [n, T, d] added to the input embeddings for an embedding-noise corrupt run)."""
    import nnsight

    keys = sorted(keys, key=lambda k: (k[1], P.COMPONENT_ORDER[k[0]]))  # modules in execution order
    cache = {k: [] for k in keys}
    all_logits = []
    for start, stop in P.chunks(tokens.shape[0], rows_per_pass):
        toks = tokens[start:stop].to(model.device)
        rp = read_pos[start:stop]
        keep, inverse = keep_index(rp)
        locs = [(k, model.location(*k)) for k in keys]
        with torch.inference_mode():
            with model.nn.trace(toks, **trace_kwargs(model, keep.to(model.device), toks)):
                add_noise(model, emb_path, None if noise is None else noise[start:stop])
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
        all_logits.append(logits_at(logits.cpu(), keep, inverse, rp).float())
    return {k: torch.cat(v) for k, v in cache.items()}, torch.cat(all_logits)


def _cached_plain(cache: dict | None, model: Model, tokens, read_pos, keys, rows_per_pass: int,
                  noise: torch.Tensor | None = None, emb_path: str | None = None):
    """`_run_plain`, reusing activations and logits already in `cache` and adding what was missing."""
    if cache is None:
        return _run_plain(model, tokens, read_pos, keys, rows_per_pass, noise, emb_path)
    ident = (id(model), tokens.numpy().tobytes(), tuple(tokens.shape), read_pos.numpy().tobytes(),
             None if noise is None else digest(tensor_checksum(noise)))
    # the entry holds the model, so its id cannot be reused by another model while the entry exists
    entry = cache.setdefault(ident, {"acts": {}, "logits": None, "model": model})
    missing = [k for k in keys if k not in entry["acts"]]
    if missing or entry["logits"] is None:
        acts, logits = _run_plain(model, tokens, read_pos, missing, rows_per_pass, noise, emb_path)
        entry["acts"].update(acts)
        entry["logits"] = logits
    return {k: entry["acts"][k] for k in keys}, entry["logits"]


def baseline_metrics(metric: Metric, data: ContrastSet, clean_logits, corrupt_logits):
    """(answer, wrong, clean metric, corrupt metric) of the unpatched runs, checked finite (node and path scans)."""
    answer = torch.tensor(data.answer)
    wrong = torch.tensor(data.wrong) if data.wrong is not None else None
    clean_metric = metric.compute(clean_logits, answer, wrong, clean_logits).numpy()
    corrupt_metric = metric.compute(corrupt_logits, answer, wrong, clean_logits).numpy()
    check_finite(clean_metric, "the clean run")
    check_finite(corrupt_metric, "the corrupt run")
    return answer, wrong, clean_metric, corrupt_metric


def check_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise MetricError(f"the metric is NaN or infinite in {where} (first entries at {idx}); check the model's "
                          "dtype (float16 overflow?) and the answer tokens")


def _site_positions(data: ContrastSet, site: Site) -> np.ndarray | None:
    """Absolute token index per prompt for `site` (None for all positions)."""
    if site.position == ALL:
        return None
    return np.array([data.position_index(site.position, i) for i in range(data.n)])


def _means(source: dict, sites, used, positions, lengths: torch.Tensor) -> dict:
    """Mean activation over reference prompts, per site: [d] for one position, [T, d] for all positions."""
    out = {}
    for j, (s, u) in enumerate(zip(sites, used)):
        if not u:
            continue
        acts = source[(s.component, s.layer)]
        if getattr(s, "feature", None) is not None:  # feature sites average in the feature's own space
            acts = s.feature.lift(acts)
        if positions[j] is None:
            T = acts.shape[1]
            mask = (torch.arange(T)[None, :] < lengths[:, None]).to(acts.dtype)
            mask = mask.reshape(mask.shape + (1,) * (acts.ndim - 2))
            out[j] = (acts * mask).sum(0) / mask.sum(0).clamp(min=1)
        else:
            out[j] = acts[torch.arange(acts.shape[0]), torch.as_tensor(positions[j])].mean(0)
    return out


def _resample_sources(n: int, n_columns: int, seed: int, lengths=None) -> np.ndarray:
    """For each column and prompt, another prompt to take the activation from (never itself when n > 1).

    With `lengths` (a site at every position), the source has the same length as the prompt, so no padding
    activation is ever written into a real position; a prompt whose length no other prompt has is refused.
    """
    rng = np.random.default_rng(seed)
    if n == 1:
        raise ScanError("resample ablation needs at least 2 prompts (it takes activations from another prompt)")
    if lengths is None or len(set(lengths)) == 1:
        shift = rng.integers(1, n, size=(n_columns, n))
        return (np.arange(n)[None, :] + shift) % n
    lengths = np.asarray(lengths)
    out = np.empty((n_columns, n), dtype=int)
    for L in np.unique(lengths):
        group = np.flatnonzero(lengths == L)
        if len(group) == 1:
            raise ScanError(f"resample ablation at positions='all' takes a whole sequence of activations from another "
                            f"prompt of the same length (a shorter or longer one would write padding or drop "
                            f"tokens), but prompt {group[0]} is the only prompt with {L} tokens. Add prompts of that "
                            "length, use prompts of one length, ablate at named positions (e.g. 'end'), or use "
                            "mean ablation")
        shift = rng.integers(1, len(group), size=(n_columns, len(group)))
        out[:, group] = group[(np.arange(len(group))[None, :] + shift) % len(group)]
    return out


def prepare(model: Model, data: ContrastSet, the_plan: P.Plan, cache: dict | None = None) -> Context:
    """Run the unpatched clean/corrupt passes once and gather what every unit of `the_plan` reads."""
    intervention = Intervention.from_dict(the_plan.intervention)
    metric = Metric.from_dict(the_plan.metric)
    sites, columns, n = the_plan.sites, the_plan.columns, the_plan.n_prompts
    member = np.zeros((len(columns), len(sites)), dtype=bool)
    for c, cols in enumerate(columns):
        member[c, list(cols)] = True
    used = member.any(0)
    clean_tok, corrupt_tok = data.tokens("clean"), data.tokens("corrupt")
    read_pos = read_positions(data, metric)
    keys = sorted({(s.component, s.layer) for s, u in zip(sites, used) if u})
    max_low = max(u.low_layer for u in the_plan.units)
    skip_keys = [("resid_post", layer) for layer in range(max_low)]

    ref_run = intervention.reference
    kind = intervention.kind
    need_clean = kind == "denoise" or (kind in ("mean", "resample") and ref_run == "clean")
    need_corrupt = kind == "noise" or (kind in ("mean", "resample") and ref_run == "corrupt")
    clean_keys = (keys if need_clean else []) + (skip_keys if intervention.base_run == "clean" else [])
    corrupt_keys = (keys if need_corrupt else []) + (skip_keys if intervention.base_run == "corrupt" else [])
    clean_cache, clean_logits = _cached_plain(cache, model, clean_tok, read_pos, sorted(set(clean_keys)),
                                              the_plan.base_rows)
    noise = data.corruption.draw(model, data) if data.corruption is not None else None  # causal tracing
    emb_path = embedding_module(model) if noise is not None else None
    corrupt_cache, corrupt_logits = _cached_plain(cache, model, corrupt_tok, read_pos, sorted(set(corrupt_keys)),
                                                  the_plan.base_rows, noise, emb_path)
    answer, wrong, clean_metric, corrupt_metric = baseline_metrics(metric, data, clean_logits, corrupt_logits)

    base_cache = corrupt_cache if intervention.base_run == "corrupt" else clean_cache
    source = {"denoise": clean_cache, "noise": corrupt_cache}.get(kind)
    if kind in ("mean", "resample"):
        source = clean_cache if ref_run == "clean" else corrupt_cache
    positions = [(_site_positions(data, s) if u else None) for s, u in zip(sites, used)]
    means = _means(source, sites, used, positions, torch.tensor(data.lengths)) if kind == "mean" else None
    resample_from = None
    if kind == "resample":  # a whole sequence ("all") only from prompts of the same length
        whole = any(u and s.position == ALL for s, u in zip(sites, used))
        resample_from = _resample_sources(n, len(columns), intervention.seed, data.lengths if whole else None)
    if kind in ("zero", "mean"):
        source = None  # units need only the means (or nothing): keep the context small
    base_tok = corrupt_tok if intervention.base_run == "corrupt" else clean_tok
    base_noise = noise if intervention.base_run == "corrupt" else None
    prefix_kv = (base_kv(model, base_tok, the_plan.base_rows, base_noise, emb_path)
                 if getattr(the_plan, "reuse_prefix", False) else None)
    return Context(key=the_plan.key, sites=tuple(sites), member=member, positions=positions, read_pos=read_pos,
                   answer=answer, wrong=wrong, clean_logits=clean_logits,
                   base_tok=corrupt_tok if intervention.base_run == "corrupt" else clean_tok,
                   source=source, base_cache={k: base_cache[k] for k in skip_keys}, means=means,
                   resample_from=resample_from, intervention=intervention, metric=metric, n_prompts=n,
                   clean_metric=clean_metric, corrupt_metric=corrupt_metric,
                   base_noise=base_noise, emb_path=emb_path, prefix_kv=prefix_kv)

