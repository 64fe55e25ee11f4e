"""Model loading and architecture adapters (the only place that knows module names)."""
from .adapters import ADAPTERS, Adapter, UnsupportedModelError
from .load import Model, ModelLoadError, load_model

__all__ = ["ADAPTERS", "Adapter", "Model", "ModelLoadError", "UnsupportedModelError", "load_model"]
