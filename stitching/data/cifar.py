"""CIFAR-10 and CIFAR-100 through torchvision; validation is a seeded, stratified part of the train set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Subset
from torchvision.datasets import CIFAR10, CIFAR100

from stitching.data.base import ImageDataModule
from stitching.data.digits import split_hash
from stitching.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    build_transforms,
    resolve_data_config,
)


class _CIFARDataModule(ImageDataModule):
    """Shared CIFAR logic; subclasses name the torchvision dataset and the default mean/std.

    Splits: ``train`` is the official training set minus ``val_size`` images, ``val`` is those images (chosen
    by ``split_seed``, stratified by class, preprocessed like test images), ``test`` is the official test set.
    Preprocessing follows timm's data config of ``model_name`` or the ``data_config`` dict (keys input_size,
    mean, std, interpolation, crop_pct) when given; else 32x32 with the dataset's mean/std, and random crop
    plus flip for training when ``augment``.
    """

    dataset_cls: ClassVar[type[CIFAR10]]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
        model_name: str | None = None,
        data_config: dict[str, Any] | None = None,
        augment: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if val_size <= 0:
            raise ValueError(f"val_size must be positive, got {val_size}")
        self.save_hyperparameters()
        self.data_config = resolve_data_config(model_name, data_config)
        self.split_indices: dict[str, np.ndarray] | None = None

    def prepare_data(self) -> None:
        if self.hparams.download:
            for train in (True, False):
                self.dataset_cls(self.hparams.data_dir, train=train, download=True)

    def _dataset(self, train: bool, transform) -> CIFAR10:
        try:
            return self.dataset_cls(self.hparams.data_dir, train=train, transform=transform)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            where = Path(self.hparams.data_dir) / self.dataset_cls.base_folder
            raise FileNotFoundError(
                f"{self.dataset_cls.__name__} not found or corrupted at {where}; "
                "set data.init_args.download=true to fetch it"
            ) from e

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        train_tf, eval_tf = build_transforms(self.data_config, self.hparams.augment, self.mean, self.std)
        train_aug = self._dataset(True, train_tf)
        train_plain = self._dataset(True, eval_tf)
        targets = np.asarray(train_aug.targets)
        train_idx, val_idx = train_test_split(
            np.arange(len(targets)),
            test_size=self.hparams.val_size,
            stratify=targets,
            random_state=self.hparams.split_seed,
        )
        test = self._dataset(False, eval_tf)
        self.split_indices = {
            "train": np.sort(train_idx),
            "val": np.sort(val_idx),
            "test": np.arange(len(test)),
        }
        self.hparams.update(
            split_sizes={k: len(v) for k, v in self.split_indices.items()},
            split_hash=split_hash(self.split_indices),
        )
        self.data_train = Subset(train_aug, self.split_indices["train"].tolist())
        self.data_train_eval = Subset(train_plain, self.split_indices["train"].tolist())
        self.data_val = Subset(train_plain, self.split_indices["val"].tolist())
        self.data_test = test


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (10 classes); see ``_CIFARDataModule`` for splits and preprocessing."""

    dataset_cls = CIFAR10
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    num_classes = 10


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (100 fine classes); see ``_CIFARDataModule`` for splits and preprocessing."""

    dataset_cls = CIFAR100
    mean, std = CIFAR100_MEAN, CIFAR100_STD
    num_classes = 100
