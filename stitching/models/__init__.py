"""Models by name: timm's registry, our ``mini_*`` variants (registered on import), local checkpoints."""

from stitching.models import mini  # noqa: F401  (registers the mini_* variants with timm)
from stitching.models._checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from stitching.models._factory import UnknownModelError, check_model_name, create_model, list_models

__all__ = [
    "CheckpointError",
    "UnknownModelError",
    "check_model_name",
    "create_model",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
]
