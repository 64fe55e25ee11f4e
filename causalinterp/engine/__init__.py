"""Engine: compiles sites x prompts into batched nnsight interventions; returns per-prompt `Effects`."""
from .effects import Effects
from .execute import ScanError, scan
from .plan import BudgetError

__all__ = ["BudgetError", "Effects", "ScanError", "scan"]
