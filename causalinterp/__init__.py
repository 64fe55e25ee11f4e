"""causalinterp: statistical causal-intervention testing for mechanistic interpretability.

Data flow: spec (ContrastSet, sites, intervention, metric, claim) -> engine (`scan`, per-prompt
`Effects`) -> stats -> verdict (`evaluate`) -> `Result` -> reports.  `run` does scan + evaluate.
"""
from . import models, stats
from .engine import BudgetError, Effects, ScanError, scan
from .evaluate import Evaluation, evaluate
from .models import Model, load_model
from .replicate import Replication, replicate
from .result import Result
from .runner import run, run_all
from .spec import claims, metrics, sites
from .spec.data import ContrastSet, DataError
from .spec.hypothesis import DataRef, Hypothesis, HypothesisError, load_hypotheses
from .spec.interventions import Intervention, ablate, patch
from .spec.metrics import Metric
from .spec.sites import Site, SiteSet

__version__ = "0.1.0"
__all__ = ["BudgetError", "ContrastSet", "DataError", "DataRef", "Effects", "Evaluation", "Hypothesis",
           "HypothesisError", "Intervention", "Metric", "Model", "Replication", "Result", "ScanError", "Site", "SiteSet", "ablate",
           "claims", "evaluate", "load_hypotheses", "load_model", "metrics", "models", "patch", "replicate", "run",
           "run_all", "scan", "sites", "stats"]


def __getattr__(name):  # tasks/testbeds import lazily (testbeds reads package data)
    if name in ("tasks", "testbeds", "report", "tracking"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    if name == "hypothesis":  # the pytest-plugin decorator
        from .pytest_plugin import hypothesis
        return hypothesis
    raise AttributeError(f"module 'causalinterp' has no attribute {name!r}")
