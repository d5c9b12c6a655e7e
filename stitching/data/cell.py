"""The data of one benchmark cell as a Lightning data module, for re-running a cell with ``stitching fit``."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import lightning as L
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import DataLoader, Dataset

from stitching.core.training import EpochOrderSampler
from stitching.data.base import ImageDataModule


class CellDataModule(L.LightningDataModule):
    """A dataset's training split with evaluation preprocessing (no augmentation), in the seeded order the
    benchmark's cached loop uses (:func:`stitching.core.training.epoch_order`), and its val and test splits.

    Args:
        dataset: The data module the cell uses, as ``{class_path, init_args}`` (built on first use, so that
            its own hyperparameters are its own under LightningCLI).
        order_seed: Seed of the order of training samples (the cell's ``stitch_seed``).
        batch_size: Training samples per step (the cell's ``recipe.batch_size``).
    """

    def __init__(self, dataset: dict[str, Any], order_seed: int = 0, batch_size: int = 128) -> None:
        super().__init__()
        self.spec, self.order_seed, self.batch_size = dataset, order_seed, batch_size

    @cached_property
    def dataset(self) -> ImageDataModule:
        """The cell's data module."""
        spec = {"class_path": self.spec["class_path"], "init_args": self.spec.get("init_args", {})}
        return instantiate_class((), spec)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def prepare_data(self) -> None:
        self.dataset.prepare_data()

    def setup(self, stage: str) -> None:
        self.dataset.setup(stage)

    def eval_dataset(self, split: str) -> Dataset:
        """One split with evaluation preprocessing, in its fixed order."""
        return self.dataset.eval_dataset(split)

    def train_dataloader(self) -> DataLoader:
        train = self.eval_dataset("train")
        return DataLoader(
            train,
            batch_size=self.batch_size,
            sampler=EpochOrderSampler(len(train), self.order_seed),
            num_workers=self.dataset.num_workers,
            pin_memory=self.dataset.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        return self.dataset.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.dataset.test_dataloader()
