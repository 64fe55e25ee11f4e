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

Rows are (path, prompt) pairs laid out like the engine's plan (column-major) and cut into units by the
memory budget (`make_path_plan`, a `plan.Plan` whose sites are `Path`s); both passes of a unit take many
paths at once.  `prepare_paths` runs the unpatched runs once into a `PathContext`, and `engine.unit.run_unit`
hands a path unit to `PathContext.run_unit`, so `ci.scan` stores, resumes and distributes path units exactly
as node units (`checkpoint=`, executors).  A unit computes the senders' changes (step 1) only for its own
(sender, prompt) pairs, so memory follows the pass, not the number of prompts; both passes skip the blocks
below the unit's lowest receiver.  Random paths for `claims.beats_random`: `random_paths`.  Exactness against
hand-written torch hooks that freeze every non-sender component is tested in tests/test_paths.py.
docs/paths.md gives the semantics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..models.adapters import UnsupportedModelError, component_view, head_index, raw_tensor
from ..models.load import Model
from ..spec.data import ContrastSet
from ..spec.interventions import Intervention
from ..spec.metrics import Metric
from ..spec.paths import LOGITS, SENDER_COMPONENTS, Path, PathSet
from ..spec.schema import Bool, Seed, check_value
from ..spec.sites import ALL, Site, SiteError, check_distinct
from . import plan as P
from .compile import (ScanError, _cached_plain, _can_skip, _check_inputs, _means, _random_pool, _resample_sources,
                      _resolve_sites, _site_positions, baseline_metrics, model_identity, model_shape, random_site_sets,
                      read_positions)
from .fingerprint import digest
from .unit import _Group, _run_patched, embedding_module, keep_index, logits_at, trace_kwargs

__all__ = ["resolve_paths", "make_path_plan", "prepare_paths", "PathContext", "random_paths",
           "sender_pool"]


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


# --- the plan: one column per path, random paths after the scan's own ----------------------------
def make_path_plan(model, data: ContrastSet, spec, *, intervention=None, metric=None, joint: bool = False,
                   n_random: int = 0, random_pool=None, seed: int = 0, memory_budget="2GB",
                   batch_size: int | None = None) -> P.Plan:
    """`compile.make_plan` for path sites: a `Plan` whose sites are `Path`s, one column each.

    The scan's paths come first (`n_main`), then ``n_random`` random paths of the same size (`random_paths`).
    Units are the same content-addressed row ranges as node scans, so `checkpoint=` and executors work
    unchanged; each unit runs both passes of its rows (`PathContext.run_unit`).
    """
    model, intervention, metric = _check_inputs(model, data, intervention, metric, n_random)
    seed = check_value(Seed, seed, ScanError, "seed")
    joint = check_value(Bool, joint, ScanError, "joint")
    paths = resolve_paths(model, data, spec, joint)
    n_main = len(paths)
    if n_random:
        if n_main != 1:
            raise ScanError(f"n_random compares one path with random paths of the same size, but {n_main} paths were "
                            "given: pass joint=True (all of them as one path) or scan one path")
        paths = paths + random_paths(model, data, paths[0], n_random, seed, random_pool)
    elif random_pool is not None:
        raise ScanError("random_pool= is the pool of senders for random paths: it needs n_random > 0")
    n, T = data.n, max(data.lengths)
    read_pos = read_positions(data, metric)
    shape = model_shape(model)
    senders = list(dict.fromkeys(s for p in paths for s in p.senders))
    receivers = list(dict.fromkeys(r for p in paths for r in p.receivers))
    n_cached = len({(s.component, s.layer) for s in senders}) + len({reads(model, r)[1] for r in receivers})
    n_keep = len(torch.unique(read_pos))
    # a row's pass also holds its senders' changes and the streams written at its receivers: [T, d] each
    width = max(len(p.senders) for p in paths) + max(len(p.receivers) for p in paths) + 1
    per_row = P.bytes_per_row(shape, T, n_keep) + width * T * model.d_model * 4
    fixed = P.cache_bytes(shape, n, T, n_cached + model.n_layers)
    budget = P.parse_bytes(memory_budget)
    on_cpu = model.device.type == "cpu"
    rows = P.rows_per_pass(len(paths) * n, per_row, fixed, budget, batch_size, on_cpu)
    base_rows = P.rows_per_pass(n, per_row, fixed, budget, batch_size, on_cpu)
    skip = _can_skip(model)

    ident = model_identity(model)
    data_hash = digest(data.to_dict())
    columns = tuple((c,) for c in range(len(paths)))
    key = digest("paths", ident, data_hash, [p.to_dict() for p in paths], intervention.to_dict(), metric.to_dict(),
                 skip, n_main)
    low = np.array([min((r.layer for r in p.receivers if r != LOGITS), default=model.n_layers) for p in paths])
    row_col, _ = P.make_rows(len(paths), n)
    units = []
    for i, (r0, r1) in enumerate(P.chunks(len(paths) * n, rows)):
        lo = int(low[row_col[r0:r1]].min())
        passes = 0 if lo == model.n_layers else 2      # rows ending in "logits" need no forward pass
        flops = passes * P.unit_flops(shape, r1 - r0, T, lo if skip else 0, n_keep)
        units.append(P.Unit(i, digest(key, r0, r1), r0, r1, min(lo, model.n_layers - 1), flops,
                            P.unit_bytes(shape, r1 - r0, T, lo if skip else 0, n_keep)))
    return P.Plan(key=key, model=ident, data_hash=data_hash, n_prompts=n, seq_len=T, sites=tuple(paths),
                  columns=columns, n_main=n_main, joint=joint, n_random=n_random, seed=seed,
                  intervention=intervention.to_dict(), metric=metric.to_dict(), rows_per_pass=rows,
                  base_rows=base_rows, memory_budget=budget, skip_blocks=skip, units=tuple(units))


def sender_pool(model: Model, data: ContrastSet, path: Path, random_pool=None) -> list[Site]:
    """Candidate senders for random paths to `path`'s receivers: `random_pool` if given, else the senders'
    component(s) at their position(s), at every layer (and head), that are upstream of every receiver."""
    states = [reads(model, r)[0] for r in path.receivers]
    upstream = lambda s: all(enters(model, s) <= st for st in states)  # noqa: E731
    if random_pool is None:
        pool = [s for s in _random_pool(model, path.senders) if upstream(s)]
    else:
        pool = list(_resolve_sites(model, data, random_pool))
        for s in pool:
            if s.component not in SENDER_COMPONENTS:
                raise ScanError(f"random_pool: {s.label} cannot send; senders are {', '.join(SENDER_COMPONENTS)}")
            if not upstream(s):
                raise ScanError(f"random_pool: {s.label} is not upstream of every receiver of {path.label}, so a "
                                "random path with it would not reach them; drop it from the pool")
    for s in pool:
        if s.component == "head_out":
            _check_head_sender(model, s)
    return pool


def random_paths(model: Model, data: ContrastSet, path: Path, n_random: int, seed: int,
                 random_pool=None) -> tuple[Path, ...]:
    """`n_random` random paths of `path`'s size: its receivers, and as many distinct senders drawn (seeded, by
    `compile.random_site_sets`) from `sender_pool` less the path's own senders (the whole pool when that
    leaves too few).  Fewer than `n_random` come back when the pool has fewer distinct sender sets: all of them."""
    pool = sender_pool(model, data, path, random_pool)
    k = len(path.senders)
    others = [s for s in pool if s not in set(path.senders)]
    if len(others) < k:
        others = pool
    if len(others) < k:
        raise ScanError(f"the random sender pool has {len(others)} senders, fewer than the {k} of {path.label}; pass "
                        "a larger random_pool=")
    return tuple(Path(tuple(others[i] for i in sorted(picks)), path.receivers)
                 for picks in random_site_sets(len(others), k, n_random, seed))


# --- the context every unit reads ------------------------------------------------------------------
@dataclass
class PathContext:
    """Everything a path unit needs besides the model (built once by `prepare_paths`, shipped to workers).

    The unpatched runs' activations are cached for every prompt; the senders' changes to the stream are
    not: each unit computes them for its own (sender, prompt) pairs, so memory follows the pass size.
    """

    key: str
    paths: tuple
    senders: list
    sender_pos: list            # per sender: absolute token index per prompt, or None (every position)
    enter: list                 # per sender: the stream state from which its change is in the stream
    recv_pos: dict              # receiver -> token index per prompt, or None
    read_pos: torch.Tensor
    answer: torch.Tensor
    wrong: torch.Tensor | None
    clean_logits: torch.Tensor
    base_tok: torch.Tensor
    base_cache: dict            # (component, layer) -> base-run activations: senders, read streams, skipped blocks
    source: dict | None         # (component, layer) -> source-run activations (patching, resample)
    means: dict | None          # sender index -> mean activation (mean ablation)
    resample_from: np.ndarray | None
    intervention: Intervention
    metric: Metric
    n_prompts: int
    clean_metric: np.ndarray
    corrupt_metric: np.ndarray
    skip_keys: set
    base_noise: torch.Tensor | None = None
    emb_path: str | None = None

    def run_unit(self, model: Model, unit: P.Unit) -> np.ndarray:
        """Metric values (float64) of the unit's rows: `engine.unit.run_unit` hands path units here."""
        n = self.n_prompts
        rows = np.arange(unit.start, unit.stop)
        cols, prompts = rows // n, rows % n
        change = self._changes(model, cols, prompts)
        rp = self.read_pos[prompts]
        logit_rows = np.array([self.paths[c].receivers == (LOGITS,) for c in cols])
        picked = torch.zeros(len(cols), self.clean_logits.shape[1])
        if logit_rows.any():
            from ..lens import final_logits
            idx = np.flatnonzero(logit_rows)
            state, key = reads(model, LOGITS)
            resid = self.base_cache[key][prompts[idx]].float().clone()
            for k, i in enumerate(idx):
                resid[k] += change(cols[i], prompts[i:i + 1], state)[0]
            picked[idx] = final_logits(model, resid[torch.arange(len(idx)), rp[idx]].to(
                self.base_cache[key].dtype)).float().cpu()
        other = np.flatnonzero(~logit_rows)
        if other.size:
            picked[other] = _receiver_rows(model, self, cols[other], prompts[other], change)
        wrong = self.wrong[prompts] if self.wrong is not None else None
        return self.metric.compute(picked, self.answer[prompts], wrong, self.clean_logits[prompts]).numpy().astype(
            np.float64)

    def _changes(self, model: Model, cols, prompts):
        """`change(c, prompts, state)`: the summed stream change of path c's senders upstream of `state`, [rows, T, d],
        from the senders' changes computed here for the (sender, prompt) pairs of these rows only."""
        index = {s: j for j, s in enumerate(self.senders)}
        need: dict = {}
        for c in np.unique(cols):
            for s in self.paths[c].senders:
                need.setdefault(index[s], set()).update(prompts[cols == c].tolist())
        deltas, where = {}, {}
        for j, ps in need.items():
            ps = np.array(sorted(ps))
            deltas[j] = self._delta(model, j, ps)
            where[j] = {int(p): i for i, p in enumerate(ps)}
        T, d = self.base_tok.shape[1], model.d_model

        def change(c: int, rows_prompts: np.ndarray, state: int) -> torch.Tensor:
            total = torch.zeros(len(rows_prompts), T, d)
            for s in self.paths[c].senders:
                j = index[s]
                if self.enter[j] <= state:
                    total += deltas[j][torch.as_tensor([where[j][int(p)] for p in rows_prompts])]
            return total
        return change

    def _delta(self, model: Model, j: int, prompts: np.ndarray) -> torch.Tensor:
        """[len(prompts), T, d] change of the stream made by sender j on these prompts (see `_sender_delta`)."""
        s, kind = self.senders[j], self.intervention.kind
        pos = self.sender_pos[j]
        pos_p = None if pos is None else pos[prompts]
        base = self.base_cache[(s.component, s.layer)][torch.as_tensor(prompts)]
        rows = torch.arange(len(prompts))
        if kind == "zero":
            new = torch.zeros_like(base if pos is None else base[rows, torch.as_tensor(pos_p)])
        elif kind == "mean":
            m = self.means[j]
            new = m.expand(base.shape if pos is None else base[rows, 0].shape).clone()
        else:
            acts = self.source[(s.component, s.layer)]
            src = torch.as_tensor(self.resample_from[j][prompts] if kind == "resample" else prompts)
            if pos is None:
                new = acts[src]
            else:
                new = acts[src, torch.as_tensor(pos)[src]] if kind == "resample" else acts[src, torch.as_tensor(pos_p)]
        if s.head is not None:
            new = new[..., s.head, :]
        return _sender_delta(model, s, base, new, pos_p)


def prepare_paths(model: Model, data: ContrastSet, the_plan: P.Plan, cache: dict | None = None) -> PathContext:
    """`compile.prepare` for path plans: the unpatched clean/corrupt runs once, and what every unit reads."""
    intervention = Intervention.from_dict(the_plan.intervention)
    metric = Metric.from_dict(the_plan.metric)
    paths, n = the_plan.sites, the_plan.n_prompts
    kind = intervention.kind
    senders = list(dict.fromkeys(s for p in paths for s in p.senders))
    receivers = list(dict.fromkeys(r for p in paths for r in p.receivers))
    sender_keys = {(s.component, s.layer) for s in senders}
    stream_keys = {reads(model, r)[1] for r in receivers}
    read_pos = read_positions(data, metric)
    low = min((r.layer for r in receivers if r != LOGITS), default=0)
    skip_keys = {("resid_post", layer) for layer in range(low)} if the_plan.skip_blocks else set()
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
        got[run] = _cached_plain(cache, model, data.tokens(run), read_pos, sorted(keys[run]), the_plan.base_rows,
                                 *((noise, emb_path) if run == "corrupt" else (None, None)))
    (base_cache, _), (src_cache, _) = got[base_run], got[src_run]
    clean_logits, corrupt_logits = got["clean"][1], got["corrupt"][1]
    answer, wrong, clean_metric, corrupt_metric = baseline_metrics(metric, data, clean_logits, corrupt_logits)
    _check_logit_readout(model, paths, base_cache, read_pos, clean_logits if base_run == "clean" else corrupt_logits)

    lengths = torch.tensor(data.lengths)
    sender_pos = [_site_positions(data, s) for s in senders]
    means = ({j: _means(src_cache, [s], [True], [sender_pos[j]], lengths)[0] for j, s in enumerate(senders)}
             if kind == "mean" else None)
    whole = any(s.position == ALL for s in senders)
    resample_from = (_resample_sources(n, len(senders), intervention.seed, data.lengths if whole else None)
                     if kind == "resample" else None)
    return PathContext(
        key=the_plan.key, paths=tuple(paths), senders=senders, sender_pos=sender_pos,
        enter=[enters(model, s) for s in senders],
        recv_pos={r: _site_positions(data, r) for r in receivers if r != LOGITS}, read_pos=read_pos,
        answer=answer, wrong=wrong, clean_logits=clean_logits, base_tok=data.tokens(base_run), base_cache=base_cache,
        source={k: src_cache[k] for k in sender_keys} if kind in ("denoise", "noise", "resample") else None,
        means=means, resample_from=resample_from, intervention=intervention, metric=metric, n_prompts=n,
        clean_metric=clean_metric, corrupt_metric=corrupt_metric, skip_keys=skip_keys,
        base_noise=noise if base_run == "corrupt" else None, emb_path=emb_path if base_run == "corrupt" else None)


def _receiver_rows(model: Model, ctx: PathContext, cols, prompts, change) -> torch.Tensor:
    """Logits at the read positions for rows whose paths end in heads/MLPs: the compute pass, then the final pass.

    Both passes skip the blocks below the rows' lowest receiver with the base run's cached outputs (in the
    compute pass the stream there is overwritten whole, so what those blocks compute is never read)."""
    paths, base_cache, positions = ctx.paths, ctx.base_cache, ctx.recv_pos
    prompts_t = torch.as_tensor(prompts)
    rp = ctx.read_pos[prompts]
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
    toks = ctx.base_tok[prompts_t]
    low = min(r.layer for c in np.unique(cols) for r in paths[c].receivers)
    def skipped():  # fresh per pass: the compute pass overwrites the next block's input (the last one) in place
        return [base_cache[("resid_post", layer)][prompts_t] for layer in range(low)
                if ("resid_post", layer) in ctx.skip_keys]
    recomputed = _compute_pass(model, toks, keep, writes, reads_, skip=skipped())

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
    noise = None if ctx.base_noise is None else ctx.base_noise[prompts_t]
    logits = _run_patched(model, toks, keep, ordered, skipped(), noise, ctx.emb_path)
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
