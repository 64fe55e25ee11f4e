"""`slurm(folder, ...)`: submitit job arrays over cost-balanced groups of units.

The driver writes the prepared context (and, for models without a loadable name, the weights) once
into the shared results directory; each array task loads the model, computes the units of its group
that have no valid shard yet and writes each shard as it finishes.  A preempted or timed-out task is
requeued by submitit (`checkpoint` below) and skips what it already wrote; a failed task's missing
units are resubmitted up to `max_retries` times.  The driver reads the shards back, so a killed
driver loses nothing: rerun the scan (with any executor) on the same results directory.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..engine.compile import ScanError
from ..engine.plan import Unit
from ..engine.store import ResultStore
from ..engine.workers import Job, ModelSource, balanced_groups


def _checkpointable():
    """submitit's base class for requeue-on-preemption (imported lazily: submitit is optional)."""
    try:
        import submitit
    except ImportError:
        raise ScanError("the slurm executor needs the submitit package: pip install 'causalinterp[scale]'") from None
    return submitit.helpers.Checkpointable


def run_group(store_root: str, key: str, source_path: str, units: list[dict], device: str = "auto",
              torch_threads: int | None = None) -> int:
    """One array task: compute the units of a group that lack a valid shard; returns how many it computed."""
    import torch

    from ..engine.unit import run_unit
    if torch_threads:
        torch.set_num_threads(torch_threads)
    store = ResultStore(store_root)
    todo = [Unit.from_dict(u) for u in units]
    todo = [u for u in todo if store.load(u.hash, u.n_rows) is None]
    if not todo:
        return 0
    source: ModelSource = torch.load(source_path, weights_only=False)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = source.load(device)
    ctx = store.load_context(key)
    for u in todo:
        values = run_unit(model, ctx, u)
        if not store.save(u.hash, values):
            raise ScanError(f"could not store unit {u.hash} in {store_root} "
                            f"({store.write_failed or 'values are not finite'})")
    return len(todo)


class SlurmExecutor:
    """See `slurm()`.  After each scan, `last_run` holds the number of arrays submitted and tasks that failed."""

    name = "slurm"

    def __init__(self, folder, *, partition: str | None = None, cluster: str | None = None, n_jobs: int | None = None,
                 max_retries: int = 2, ship_weights: bool | None = None, torch_threads: int | None = None,
                 poll_s: float = 0.5, **params):
        self.folder = Path(folder)
        self.cluster, self.n_jobs, self.max_retries = cluster, n_jobs, max_retries
        self.ship_weights, self.torch_threads, self.poll_s = ship_weights, torch_threads, poll_s
        self.params = dict(params)
        if partition is not None:
            self.params["slurm_partition"] = partition
        self.params.setdefault("timeout_min", 60)
        self.task = _Task()  # the array task's callable (tests wrap it to inject failures)
        self.last_run: dict = {}

    def __repr__(self) -> str:
        return f"slurm({str(self.folder)!r}, cluster={self.cluster!r}, n_jobs={self.n_jobs})"

    def _executor(self):
        _checkpointable()
        import submitit
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        ex.update_parameters(**self.params)
        return ex

    def map(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, np.ndarray]]:
        import torch
        if not units:
            return
        store = job.store if job.store is not None else ResultStore(self.folder / "results")
        store.save_context(job.context)
        source = ModelSource.of(job.model, self.ship_weights)
        source_path = store.root / "models" / f"{source.weights_hash}.pt"
        if not source_path.exists():
            from ..engine.store import _write_atomic
            source_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(source_path, lambda f: torch.save(source, f))
        ex = self._executor()
        remaining = list(units)
        failures, arrays = [], 0
        for _attempt in range(self.max_retries + 1):
            groups = balanced_groups(remaining, self.n_jobs or len(remaining))
            args = [(str(store.root), job.plan.key, str(source_path), [u.to_dict() for u in g], "auto",
                     self.torch_threads) for g in groups]
            jobs = ex.map_array(self.task, *zip(*args))
            arrays += 1
            pending = dict(zip(jobs, groups))
            while pending:  # yield each group's units as its task finishes
                for j in [j for j in pending if j.done()]:
                    group = pending.pop(j)
                    err = j.exception()
                    if err is not None:
                        failures.append(f"task {j.job_id}: {type(err).__name__}: {str(err).strip()[-500:]}")
                    for u in group:
                        values = store.load(u.hash, u.n_rows)
                        if values is not None:
                            remaining.remove(u)
                            yield u, values
                if pending:
                    time.sleep(self.poll_s)
            if not remaining:
                break
        self.last_run = {"arrays": arrays, "failed_tasks": len(failures)}
        if remaining:
            raise ScanError(f"{len(remaining)} units were still missing after {self.max_retries + 1} job arrays; "
                            f"last failure: {failures[-1] if failures else 'none reported'}; logs in {self.folder}")


try:  # submitit is optional; without it `slurm()` explains what to install when used
    from submitit.helpers import Checkpointable as _Requeueable
except ImportError:  # pragma: no cover
    _Requeueable = object


class _Task(_Requeueable):
    """The array task's callable; submitit's Checkpointable requeues it unchanged on preemption or
    timeout (finished units are skipped: their shards are already in the results directory)."""

    def __call__(self, *args):
        return run_group(*args)


def slurm(folder, partition: str | None = None, *, cluster: str | None = None, n_jobs: int | None = None,
          max_retries: int = 2, ship_weights: bool | None = None, torch_threads: int | None = None,
          **submitit_params) -> SlurmExecutor:
    """Run units as a submitit job array; `folder` holds job files and logs (on a shared file system).

    `partition` is the SLURM partition; other keyword arguments go to submitit's ``update_parameters``
    (``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_*``...).  `n_jobs` array
    tasks (default: one per unit) each get a cost-balanced group of units.  ``cluster="local"`` runs
    the array as local processes (submitit's local executor, used in the tests); ``None`` picks SLURM
    when available.  Results go to the scan's ``checkpoint`` directory, else ``folder/results``.
    """
    return SlurmExecutor(folder, partition=partition, cluster=cluster, n_jobs=n_jobs, max_retries=max_retries,
                         ship_weights=ship_weights, torch_threads=torch_threads, **submitit_params)
