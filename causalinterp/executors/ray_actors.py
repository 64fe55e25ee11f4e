"""`ray(...)`: units on Ray actors that each load the model once, fed from a cost-balanced queue.

Every actor holds one unit at a time and gets the dearest unit left when it finishes one (longest
processing time first: the layer skip makes low-layer passes dearer, so big ones go early and the
small ones fill the gaps).  An actor that dies mid-unit (OOM killer, SIGKILL, lost node) is
replaced by a fresh one and the unit goes back to the head of the queue, up to `max_retries` times
per unit.  An exception raised *inside* a unit is a bug or bad input, not a fault: it is raised.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Callable, Iterator, Sequence

import numpy as np

from ..engine.compile import ScanError
from ..engine.plan import Unit
from ..engine.workers import Job, ModelSource


class _Worker:
    """One Ray actor: loads the model once, then runs units of whatever context it was last given."""

    def __init__(self, source: ModelSource, torch_threads: int, device: str):
        import torch
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = source.load(device)
        self.ctx = None

    def pid(self) -> int:
        return os.getpid()

    def set_context(self, ctx) -> None:
        self.ctx = ctx

    def run(self, unit: Unit):
        from ..engine.unit import run_unit
        t0 = time.perf_counter()
        values = run_unit(self.model, self.ctx, unit)
        return values, time.perf_counter() - t0


class RayExecutor:
    """See `ray()`.  After each scan, `last_run` holds per-worker busy seconds, retries and start-up time."""

    name = "ray"

    def __init__(self, num_workers: int | None = None, address: str | None = None, gpus_per_worker: float = 0,
                 torch_threads: int = 1, ship_weights: bool | None = None, max_retries: int = 3,
                 on_dispatch: Callable[[int, Unit], None] | None = None, init_kwargs: dict | None = None):
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers, self.address, self.gpus_per_worker = num_workers, address, gpus_per_worker
        self.torch_threads, self.ship_weights, self.max_retries = torch_threads, ship_weights, max_retries
        self.on_dispatch, self.init_kwargs = on_dispatch, dict(init_kwargs or {})
        self._actors: list = []     # live actors of the model in `_source_hash`
        self._source_hash = None
        self.last_run: dict = {}

    def __repr__(self) -> str:
        return f"ray(num_workers={self.num_workers}, address={self.address!r}, gpus_per_worker={self.gpus_per_worker})"

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise ScanError("the ray executor needs the ray package: pip install 'causalinterp[scale]'") from None
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            ray.init(address=self.address, **kw)
        return ray

    def _n_workers(self, ray) -> int:
        if self.num_workers is not None:
            return self.num_workers
        res = ray.cluster_resources()
        if self.gpus_per_worker:
            return max(1, int(res.get("GPU", 0) // self.gpus_per_worker))
        return max(1, int(res.get("CPU", 1)))

    def _new_actor(self, ray, source_ref):
        cls = ray.remote(num_cpus=self.torch_threads or 1, num_gpus=self.gpus_per_worker)(_Worker)
        device = "cuda" if self.gpus_per_worker else "cpu"
        return cls.remote(source_ref, self.torch_threads, device)

    def shutdown(self) -> None:
        """Stop this executor's actors (Ray itself keeps running)."""
        if self._actors:
            import ray
            for a in self._actors:
                ray.kill(a)
        self._actors, self._source_hash = [], None

    def map(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, np.ndarray]]:
        if not units:
            return
        t0 = time.perf_counter()
        ray = self._ray()
        source = ModelSource.of(job.model, self.ship_weights)
        if source.weights_hash != self._source_hash:  # actors are kept between scans of the same model
            self.shutdown()
            self._source_hash = source.weights_hash
        source_ref = ray.put(source)
        want = min(self._n_workers(ray), len(units))
        while len(self._actors) < want:
            self._actors.append(self._new_actor(ray, source_ref))
        actors = self._actors[:want]
        ctx_ref = ray.put(job.context)
        pids = dict(zip(actors, ray.get([a.pid.remote() for a in actors])))
        ray.get([a.set_context.remote(ctx_ref) for a in actors])
        startup = time.perf_counter() - t0

        queue = deque(sorted(units, key=lambda u: (-u.flops, u.index)))  # dearest first
        inflight: dict = {}
        busy = {pid: 0.0 for pid in pids.values()}
        tries = {u.hash: 0 for u in units}
        retried = 0

        def dispatch(actor):
            unit = queue.popleft()
            inflight[actor.run.remote(unit)] = (actor, unit)
            if self.on_dispatch is not None:
                self.on_dispatch(pids[actor], unit)

        try:
            for a in actors:
                if queue:
                    dispatch(a)
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                actor, unit = inflight.pop(ref)
                try:
                    values, seconds = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # the worker process died: replace it, retry the unit
                    tries[unit.hash] += 1
                    retried += 1
                    if tries[unit.hash] > self.max_retries:
                        raise ScanError(f"unit {unit.index} ({unit.hash}) lost its Ray worker {tries[unit.hash]} "
                                        f"times; giving up. Last error: {e}") from None
                    new = self._new_actor(ray, source_ref)
                    pids[new] = ray.get(new.pid.remote())
                    busy.setdefault(pids[new], 0.0)
                    ray.get(new.set_context.remote(ctx_ref))
                    self._actors[self._actors.index(actor)] = new
                    queue.appendleft(unit)
                    dispatch(new)
                    continue
                except ray.exceptions.RayTaskError as e:  # raised inside the unit: not a fault, a real error
                    raise e.as_instanceof_cause() from None
                busy[pids[actor]] += seconds
                if queue:
                    dispatch(actor)
                yield unit, values
        finally:
            for ref in inflight:
                ray.cancel(ref, force=False)
            self.last_run = {"workers": len(actors), "busy_s": busy, "retries": retried, "startup_s": startup,
                             "balance": _balance(busy)}


def _balance(busy: dict) -> float | None:
    """Slowest worker's busy time over the mean (1.0 is perfect balance)."""
    times = [t for t in busy.values() if t > 0]
    return max(times) / (sum(times) / len(times)) if times else None


def ray(num_workers: int | None = None, address: str | None = None, gpus_per_worker: float = 0, *,
        torch_threads: int = 1, ship_weights: bool | None = None, max_retries: int = 3,
        on_dispatch: Callable[[int, Unit], None] | None = None, init_kwargs: dict | None = None) -> RayExecutor:
    """Run units on Ray actors; each loads the model once and pulls units from a cost-balanced queue.

    `address`: ``None`` starts (or joins) a local Ray; ``"auto"`` joins the running cluster.
    `num_workers` defaults to the cluster's CPUs, or GPUs / `gpus_per_worker` (one actor per GPU with
    ``gpus_per_worker=1``).  Each actor uses `torch_threads` threads.  The model reaches the actors by
    name (testbed, hub id, path) when it has one, else its weights go through the object store
    (``ship_weights=True`` forces that); every actor checks the weights' hash against the plan.
    `on_dispatch(pid, unit)` is called just after each unit is handed to a worker (progress, fault tests).
    """
    return RayExecutor(num_workers, address, gpus_per_worker, torch_threads, ship_weights, max_retries,
                       on_dispatch, init_kwargs)
