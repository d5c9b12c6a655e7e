"""stitching: a model-stitching benchmark harness.

Cut a source model's front and a target model's back, train only a small adapter between them, and compare
the stitched accuracy with the target's own.
"""

from stitching.adapters import Adapter, create_adapter
from stitching.cuts import ActivationSpec, CutPoint, list_cuts, split_model
from stitching.models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ActivationSpec",
    "Adapter",
    "CutPoint",
    "create_adapter",
    "create_model",
    "list_cuts",
    "list_models",
    "split_model",
]
