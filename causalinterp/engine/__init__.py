"""Engine: a scan is a plan of independent units (forward passes), executed anywhere, merged by hash.

`make_plan` (``ci.plan``) lays a scan out as a serialisable `Plan`; `scan` runs plan -> execute ->
merge and returns per-prompt `Effects`; `unit.run_unit` is the per-unit work every executor calls.
"""
from .compile import ScanError, make_plan
from .confirm import Confirmation, confirm
from .effects import Effects
from .execute import scan
from .plan import BudgetError, Plan, Unit
from .screen import screen
from .store import CheckpointError, CheckpointWarning
from .workers import Job, LocalExecutor, ModelSource

__all__ = ["BudgetError", "CheckpointError", "CheckpointWarning", "Confirmation", "Effects", "Job", "LocalExecutor", "ModelSource",
           "Plan", "ScanError", "Unit", "confirm", "make_plan", "scan", "screen"]
