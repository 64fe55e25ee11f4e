"""causalinterp: statistical causal-intervention testing for mechanistic interpretability."""
from .engine import BudgetError, Effects, ScanError, scan
from . import models
from .models import Model, load_model
from .spec import metrics, sites
from .spec.data import ContrastSet, DataError
from .spec.interventions import Intervention, ablate, patch
from .spec.metrics import Metric
from .spec.sites import Site, SiteSet

__version__ = "0.1.0"
__all__ = ["BudgetError", "ContrastSet", "DataError", "Effects", "Intervention", "Metric", "Model", "ScanError",
           "Site", "SiteSet", "ablate", "load_model", "metrics", "patch", "scan", "sites"]
