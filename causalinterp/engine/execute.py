"""`scan`: plan -> execute -> merge.

`compile.make_plan` lays the scan out as independent units with content hashes; `compile.prepare`
runs the unpatched clean/corrupt passes once; an executor (`workers.local()` by default, or one from
`causalinterp.executors`) computes the units still missing, each with `unit.run_unit`; the results
are merged by unit hash (and stored as checksummed shards when ``checkpoint=DIR`` is given), so the
table is the same whichever executor ran which unit, in whatever order, resumed from wherever.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..models.load import Model, load_model
from ..spec.data import ContrastSet
from ..spec.interventions import Intervention
from ..spec.metrics import Metric
from .compile import ScanError, check_finite, make_plan, prepare
from .effects import Effects
from .store import ResultStore
from .workers import Job, LocalExecutor

__all__ = ["ScanError", "scan"]


def scan(model, data: ContrastSet, sites, *, intervention: Intervention | None = None, metric: Metric | None = None,
         joint: bool = False, batch_size: int | None = None, memory_budget="2GB", progress: bool = True,
         n_random: int = 0, random_pool=None, seed: int = 0, checkpoint: str | os.PathLike | None = None,
         cache: dict | None = None, executor=None, reuse_prefix: bool = False) -> Effects:
    """Intervene on every site (or all at once with ``joint=True``) and keep the metric per prompt.

    Returns `Effects` with ``values [n_prompts, n_columns]`` and the clean/corrupt baselines.
    ``n_random > 0`` also runs that many random site sets of the same size (for `claims.beats_random`),
    drawn with `seed` from `random_pool` (default: the same components/positions at every layer/head).
    For path sites (`ci.sites.path`) a random set is a random path: the same receivers and as many senders,
    drawn from `random_pool` as a pool of senders (default: the senders' kind upstream of every receiver;
    docs/paths.md).
    ``checkpoint`` names a results directory: each finished unit is stored there as a checksummed
    shard under its content hash, and any later scan that needs the same unit (after a kill, on
    another executor) reads it instead of recomputing.  ``executor`` runs the units:
    ``causalinterp.executors.local()`` (default), ``.ray(...)`` or ``.slurm(...)``.  ``cache`` (a dict
    the caller keeps) shares the unpatched clean/corrupt runs between scans of the same model and data.
    ``reuse_prefix=True`` starts each patched pass at its first patched position, with the base run's
    key/value cache for the positions before it (exact; columns with a site at every position, and
    models with sliding-window attention, run full passes: `causalinterp.engine.prefix`).

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(32, seed=0)
        >>> eff = ci.scan(model, data, ci.sites.head_out(positions="end"), intervention=ci.patch("noise"),
        ...               metric=ci.metrics.logit_diff(), progress=False)
        >>> eff.values.shape                      # per prompt, one column per head (3 layers x 4 heads)
        (32, 12)
    """
    from tqdm.auto import tqdm

    from ..spec.paths import is_path_spec
    t_start = time.perf_counter()
    if not isinstance(model, Model):
        model = load_model(model)
    executor = executor if executor is not None else LocalExecutor()
    if not callable(getattr(executor, "map", None)):
        raise ScanError(f"executor must come from causalinterp.executors (local(), ray(...), slurm(...)); "
                        f"got {type(executor).__name__}")
    path_scan = is_path_spec(sites)
    if path_scan:  # path sites (ci.sites.path): a plan of Path columns, two passes per unit (engine/paths.py)
        from .paths import make_path_plan, prepare_paths
        if reuse_prefix:
            raise ScanError("reuse_prefix applies to node sites; path scans run full passes (drop reuse_prefix)")
        the_plan = make_path_plan(model, data, sites, intervention=intervention, metric=metric, joint=joint,
                                  n_random=n_random, random_pool=random_pool, seed=seed, memory_budget=memory_budget,
                                  batch_size=batch_size)
    else:
        the_plan = make_plan(model, data, sites, intervention=intervention, metric=metric, joint=joint,
                             n_random=n_random, random_pool=random_pool, seed=seed, memory_budget=memory_budget,
                             batch_size=batch_size, reuse_prefix=reuse_prefix)
    store = ResultStore(checkpoint) if checkpoint is not None else None

    values = np.full(the_plan.n_rows, np.nan)
    todo = []
    for u in the_plan.units:
        stored = store.load(u.hash, u.n_rows) if store is not None else None
        if stored is None:
            todo.append(u)
        else:
            values[u.start:u.stop] = stored
    if store is not None:
        store.save_text("plans", f"{the_plan.key}.json", the_plan.to_json(indent=1))
    ctx = (prepare_paths if path_scan else prepare)(model, data, the_plan, cache)

    n_cols = len(the_plan.columns)
    bar = tqdm(total=len(the_plan.units), initial=len(the_plan.units) - len(todo), disable=not progress,
               desc=f"scan {n_cols} col x {data.n} prompts", unit="pass")
    computed = 0
    for u, v in executor.map(Job(the_plan, ctx, model, store), todo):
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (u.n_rows,):
            raise ScanError(f"executor {executor!r} returned {v.shape} values for unit {u.hash}, expected {u.n_rows}")
        values[u.start:u.stop] = v
        if store is not None:
            store.save(u.hash, v)
        computed += 1
        bar.update(1)
    bar.close()
    if computed != len(todo):
        raise ScanError(f"executor {executor!r} returned {computed} of {len(todo)} units")

    table = values.reshape(n_cols, data.n).T  # [n_prompts, n_columns]
    check_finite(table, "the patched runs")
    n_main = the_plan.n_main
    clean_metric, corrupt_metric = ctx.clean_metric, ctx.corrupt_metric
    base = corrupt_metric if ctx.intervention.base_run == "corrupt" else clean_metric
    target = clean_metric if ctx.intervention.target_run == "clean" else corrupt_metric
    meta = {"rows_per_pass": the_plan.rows_per_pass, "n_passes": len(the_plan.units),
            "seconds": time.perf_counter() - t_start, "device": str(model.device),
            "model": model.name or type(model.hf).__name__, "memory_budget": the_plan.memory_budget,
            "n_random": n_random, "seed": seed, "plan_key": the_plan.key, "executor": repr(executor),
            "units_computed": computed, "units_reused": len(the_plan.units) - len(todo),
            "reuse_prefix": the_plan.reuse_prefix, **({"paths": True} if path_scan else {})}
    if n_random:
        drawn = n_cols - n_main
        meta["random_sets"] = {"distinct": drawn if drawn < n_random else None, "drawn": drawn,
                               "exhaustive": drawn < n_random}
    if getattr(sites, "selected_on", None):      # sites chosen from an evaluation (causalinterp.selection)
        meta["selected_on"] = dict(sites.selected_on)
    return Effects(values=table[:, :n_main].copy(), clean=clean_metric, corrupt=corrupt_metric,
                   sites=the_plan.sites[:len(the_plan.columns[0]) if joint else n_main], base=base.copy(),
                   target=target.copy(), joint=joint, intervention=ctx.intervention, metric=ctx.metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters),
                   random_values=table[:, n_main:].copy() if n_random else None, meta=meta)
