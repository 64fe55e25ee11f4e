"""causalinterp: statistical causal-intervention testing for mechanistic interpretability.

Data flow: spec (ContrastSet, sites, intervention, metric, claim) -> engine (`plan` of units, run by an
executor, merged into per-prompt `Effects` by `scan`) -> stats -> verdict (`evaluate`) -> `Result` ->
reports.  `run` does scan + evaluate.
"""
from . import executors, features, lens, models, stats, tracing
from ._version import __version__
from .engine import BudgetError, CheckpointError, Confirmation, Effects, Plan, ScanError, confirm, scan, screen
from .engine import make_plan as plan
from .circuits import Circuit, faithfulness, faithfulness_curve
from .stability import stability
from .evaluate import Evaluation, evaluate
from .features import das, probe
from .lens import logit_lens
from .models import Model, load_model
from .replicate import Replication, replicate
from .result import Result
from .runner import run, run_all
from .spec import claims, metrics, sites
from .spec import features as _spec_features
from .spec import paths as _paths
from .spec.data import ContrastSet, DataError
from .spec.hypothesis import DataRef, Hypothesis, HypothesisError, load_hypotheses
from .spec.interventions import Intervention, ablate, patch
from .spec.metrics import Metric
from .spec.sites import Site, SiteSet
from .tracing import EmbeddingNoise, causal_trace


def _load_testbed(name: str, device="auto"):
    from . import testbeds
    return testbeds.load(name, device=device)


# The package wires its parts: models does not import testbeds (testbeds builds on models).
models.register_scheme("testbed", _load_testbed)
# Path sites live in spec/paths.py (which builds on spec/sites.py) and are offered as ci.sites.path etc.
for _name in ("path", "paths", "Path", "PathSet"):
    setattr(sites, _name, getattr(_paths, _name))
sites.SITE_READERS["senders"] = _paths.Path.from_dict   # a path's dict (result files) reads back as a Path
# Feature sites (spec.features builds on spec.sites): ci.sites.subspace / sae_features, and Site.from_dict for them.
sites.subspace, sites.sae_features = features.subspace, features.sae_features
sites.SITE_READERS["feature"] = _spec_features.site_from_dict
_spec_features.register_sae_loader(features.load_sae)

__all__ = ["BudgetError", "CheckpointError", "Circuit", "Confirmation", "ContrastSet", "DataError", "DataRef",
           "Effects", "EmbeddingNoise", "Evaluation", "Hypothesis", "HypothesisError", "Intervention", "Metric",
           "Model", "Plan", "Replication", "Result", "ScanError", "Site", "SiteSet", "ablate", "causal_trace",
           "claims", "confirm", "das", "evaluate", "executors", "faithfulness", "faithfulness_curve", "features",
           "lens", "load_hypotheses", "load_model", "logit_lens", "metrics", "models", "patch", "plan", "probe",
           "replicate", "run", "run_all", "scan", "screen", "sites", "stability", "stats", "tracing"]


def __getattr__(name):  # tasks/testbeds import lazily (testbeds reads package data)
    if name in ("tasks", "testbeds", "report", "tracking", "circuits"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    if name == "hypothesis":  # the pytest-plugin decorator
        from .session import hypothesis
        return hypothesis
    raise AttributeError(f"module 'causalinterp' has no attribute {name!r}")
