"""LightningModules: ClassifierModule trains base models; StitchModule trains an adapter between two."""

from stitching.modules.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
