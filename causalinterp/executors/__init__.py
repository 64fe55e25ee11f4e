"""Executors: who computes a scan's units.  Every one calls the same `engine.unit.run_unit`, and the
engine merges results by unit hash, so the executor never changes a value.

- `local()` (default): this process, in plan order.
- `ray(num_workers=None, address=None, gpus_per_worker=0)`: Ray actors that load the model once and
  pull units from a cost-balanced queue (dearest first); a worker that dies is replaced and its
  unit retried.  Needs the ``ray`` package (``pip install causalinterp[scale]``).
- `slurm(folder, partition=None, **submitit_params)`: submitit job arrays over cost-balanced groups
  of units, writing shards into the shared results directory; preempted tasks are requeued and
  failed ones resubmitted.  Needs ``submitit``; ``cluster="local"`` runs the array on this machine.

Examples:
    >>> import causalinterp as ci
    >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
    >>> eff = ci.scan(model, data, ci.sites.head_out(layers=[1], positions="end"), executor=ci.executors.local(),
    ...               progress=False)
    >>> eff.values.shape
    (8, 4)
"""
from ..engine.workers import LocalExecutor, local
from .ray_actors import RayExecutor, ray
from .slurm import SlurmExecutor, slurm

__all__ = ["LocalExecutor", "RayExecutor", "SlurmExecutor", "local", "ray", "slurm", "from_name"]


def from_name(name: str, *, workers: int | None = None, folder=None, partition: str | None = None,
              address: str | None = None, **params):
    """An executor from CLI-style options: ``local``, ``ray`` (``workers``, ``address``) or ``slurm``."""
    if name == "local":
        return local()
    if name == "ray":
        return ray(num_workers=workers, address=address)
    if name == "slurm":
        if folder is None:
            raise ValueError("the slurm executor needs a folder for job files and logs: pass --folder DIR")
        return slurm(folder, partition=partition, n_jobs=workers, **params)
    raise ValueError(f"unknown executor {name!r}; use local, ray or slurm")
