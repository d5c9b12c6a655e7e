"""LightningModules: ClassifierModule trains base models; StitchModule trains an adapter between two."""

from stitching.modules.classifier import ClassifierModule
from stitching.modules.stitch import StitchModule

__all__ = ["ClassifierModule", "StitchModule"]
