"""What executors share: the `Job` they are given, how a worker in another process gets the model,
and the in-process (local) executor that is the default.

An executor is any object with ``map(job, units)`` yielding ``(unit, values)`` pairs in any order;
each value array comes from `unit.run_unit`.  The engine merges them by unit hash, so no executor
can change a number: only which process computed it and when.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ..models.load import Model, load_model
from .compile import Context, ScanError
from .fingerprint import weights_hash
from .plan import Plan, Unit
from .store import ResultStore
from .unit import run_unit


@dataclass
class ModelSource:
    """How a worker process obtains the scan's model: by name (testbed, hub id or path) or by weights.

    The worker checks the loaded weights' hash against the plan's, so a name that now resolves to
    other weights (a moved hub revision, an edited testbed, a knocked-out copy) is an error, not a
    silent mix of models.
    """

    weights_hash: str
    name: str | None = None
    dtype: str | None = None
    hf: Any = None
    tokenizer: Any = None

    @classmethod
    def of(cls, model: Model, ship_weights: bool | None = None) -> "ModelSource":
        """By name where the model has one (``ship_weights=None``/False), else its weights travel."""
        if model.remote:
            raise ScanError("a remote (NDIF) model runs on NDIF already; use the local executor with it")
        ship = ship_weights if ship_weights is not None else not model.name
        dtype = str(next(model.hf.parameters()).dtype).replace("torch.", "")
        if ship:
            return cls(weights_hash(model), None, dtype, model.hf, model.tokenizer)
        return cls(weights_hash(model), model.name, dtype)

    def load(self, device: str = "cpu") -> Model:
        import torch
        if self.hf is not None:  # a worker's own unpickled copy
            model = load_model(self.hf, self.tokenizer, device=device)
        else:
            model = load_model(self.name, device=device)
            if self.dtype and str(next(model.hf.parameters()).dtype) != f"torch.{self.dtype}":
                model.hf.to(getattr(torch, self.dtype))
        got = weights_hash(model)
        if got != self.weights_hash:
            what = f"the model {self.name!r}" if self.name else "the shipped weights"
            raise ScanError(f"a worker loaded {what} but its weights differ from the driver's (hash {got} != "
                            f"{self.weights_hash}); the driver's model was changed after loading or the name now "
                            "resolves to other weights: pass ship_weights=True to the executor")
        return model


@dataclass
class Job:
    """One scan's units to compute: the plan, the prepared context, the driver's model and its store."""

    plan: Plan
    context: Context
    model: Model
    store: ResultStore | None = None


class LocalExecutor:
    """Run units one after another in this process on the model already loaded (the default)."""

    name = "local"

    def map(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, np.ndarray]]:
        for unit in units:
            yield unit, run_unit(job.model, job.context, unit)

    def __repr__(self) -> str:
        return "local()"


def local() -> LocalExecutor:
    """The default executor: this process, the model as loaded, units in plan order."""
    return LocalExecutor()


def balanced_groups(units: Sequence[Unit], n_groups: int) -> list[list[Unit]]:
    """Split units into `n_groups` groups of near-equal estimated FLOPs (longest first, to the lightest group)."""
    n_groups = max(1, min(n_groups, len(units)))
    groups: list[list[Unit]] = [[] for _ in range(n_groups)]
    load = [0.0] * n_groups
    for u in sorted(units, key=lambda u: (-u.flops, u.index)):
        g = min(range(n_groups), key=lambda i: (load[i], i))
        groups[g].append(u)
        load[g] += u.flops
    return [sorted(g, key=lambda u: u.index) for g in groups if g]
