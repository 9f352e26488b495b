"""Video backbones with context operators: ``build_model`` and ``list_models``."""

from .builder import FAMILIES, MODELS, Family, build_model, list_models
from .weights import LoadReport, inflate_kernel, load_pretrained

__all__ = [
    "FAMILIES",
    "MODELS",
    "Family",
    "LoadReport",
    "build_model",
    "inflate_kernel",
    "list_models",
    "load_pretrained",
]
