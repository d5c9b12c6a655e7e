"""The stitching core: one implementation of adapter building, least-squares initialisation, the optimiser
and schedule, the training step and accuracy, shared by ``stitching fit`` and ``stitching bench``."""

from stitching.core.optim import OptimizerSpec, Recipe
from stitching.core.speed import Speed

__all__ = ["OptimizerSpec", "Recipe", "Speed"]
