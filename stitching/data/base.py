"""Shared loader code for the image data modules."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses set ``num_classes`` in ``__init__``; ``setup`` sets ``data_train/val/test`` and
    ``data_train_eval`` (the training images with evaluation preprocessing, for activations and probes)."""

    num_classes: int

    def __init__(self, batch_size: int = 128, num_workers: int = 0, pin_memory: bool | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        # Pinned memory only helps host-to-GPU copies.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.data_train_eval: Dataset | None = None

    def eval_dataset(self, split: str) -> Dataset:
        """One split (train, val or test) with evaluation preprocessing (no augmentation), fixed order."""
        datasets = {"train": self.data_train_eval, "val": self.data_val, "test": self.data_test}
        if split not in datasets:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(datasets)}")
        if datasets[split] is None:
            self.setup("fit")
        return {"train": self.data_train_eval, "val": self.data_val, "test": self.data_test}[split]

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)
