"""The data of one benchmark cell as a Lightning data module, for re-running a cell with ``stitching fit``."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import lightning as L
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import DataLoader, Dataset, Subset

from stitching.core.training import EpochOrderSampler
from stitching.data.base import ImageDataModule
from stitching.data.subset import dataset_targets, draw_subset


class CellDataModule(L.LightningDataModule):
    """A dataset's training split with evaluation preprocessing (no augmentation), in the seeded order the
    benchmark's cached loop uses (:func:`stitching.core.training.epoch_order`), and its val and test splits.

    Args:
        dataset: The data module the cell uses, as ``{class_path, init_args}`` (built on first use, so that
            its own hyperparameters are its own under LightningCLI).
        order_seed: Seed of the order of training samples (the cell's ``stitch_seed``).
        batch_size: Training samples per step (the cell's ``recipe.batch_size``).
        train_per_class: The cell's training subset: this many images per class, drawn with ``subset_seed``
            (:func:`stitching.data.subset.draw_subset`); None: the whole training split.
        subset_seed: Seed of the subset's draw.
    """

    def __init__(
        self,
        dataset: dict[str, Any],
        order_seed: int = 0,
        batch_size: int = 128,
        train_per_class: int | None = None,
        subset_seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec, self.order_seed, self.batch_size = dataset, order_seed, batch_size
        self.train_per_class, self.subset_seed = train_per_class, subset_seed

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
        """One split with evaluation preprocessing, in its fixed order (the training subset for ``train``)."""
        data = self.dataset.eval_dataset(split)
        if split != "train" or self.train_per_class is None:
            return data
        if not hasattr(self, "_subset"):
            targets = dataset_targets(data)
            self._subset = draw_subset(targets, self.train_per_class, self.subset_seed, self.num_classes)
        return Subset(data, self._subset.tolist())

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
