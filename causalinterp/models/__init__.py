"""Model loading and architecture adapters (the only place that knows module names).

Examples:
    >>> import causalinterp as ci
    >>> ci.models.load_model("testbed:induction").adapter.family
    'gpt2'
"""
from .adapters import ADAPTERS, Absent, Adapter, Location, UnsupportedModelError
from .derive import DerivationError
from .load import Model, ModelLoadError, load_model, register_scheme

__all__ = ["ADAPTERS", "Absent", "Adapter", "DerivationError", "Location", "Model", "ModelLoadError",
           "UnsupportedModelError", "load_model", "register_scheme"]
