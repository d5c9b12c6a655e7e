"""LightningDataModules: digits (scikit-learn, in memory), CIFAR-10/100 (torchvision), image folders,
and a benchmark cell's data (``CellDataModule``)."""

from stitching.data.base import ImageDataModule
from stitching.data.cell import CellDataModule
from stitching.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from stitching.data.digits import DigitsDataModule
from stitching.data.folder import ImageFolderDataModule
from stitching.data.transforms import build_transforms, resolve_data_config

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CellDataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "build_transforms",
    "resolve_data_config",
]
