"""scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB and held in memory: a fast CPU benchmark."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from stitching.data.base import ImageDataModule
from stitching.data.transforms import RandomShift

# Pixel mean/std of all 1,797 images after scaling to [0, 1] and bilinear upsampling to 32x32.
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3236


class TensorImageDataset(Dataset):
    """(image, label) pairs from in-memory tensors, with an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Sorted train/val/test indices, stratified by label and fixed by ``seed``."""
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    val_size = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_size, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def split_hash(split: dict[str, np.ndarray]) -> str:
    """12 hex characters identifying a split: equal hashes mean identical index sets."""
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        h.update(name.encode() + np.asarray(split[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:12]


class DigitsDataModule(ImageDataModule):
    """The 1,797 scikit-learn digits as 3x32x32 normalised tensors with a seeded stratified split.

    No download. Images are scaled to [0, 1], upsampled bilinearly to ``image_size``, replicated to three
    channels and normalised with the dataset's pixel mean/std. The split (``split_indices``, ``split_hash``)
    depends only on ``split_seed`` and the fractions; its sizes, seed and hash are in ``hparams``.
    Training images are randomly shifted by up to ``max_shift`` pixels (0 turns augmentation off).

    Args:
        val_fraction: Share of all images held out for validation.
        test_fraction: Share of all images held out for testing.
        split_seed: Seed of the split (independent of the training seed).
        image_size: Side of the upsampled square images.
        max_shift: Largest random translation of training images, in pixels at ``image_size``.
        batch_size, num_workers, pin_memory: DataLoader settings (``pin_memory`` defaults to CUDA present).
    """

    num_classes = 10

    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        image_size: int = 32,
        max_shift: int = 3,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.save_hyperparameters()
        _, labels = _load()
        self.split_indices = stratified_split(labels, val_fraction, test_fraction, split_seed)
        self.split_hash = split_hash(self.split_indices)
        self.hparams.update(
            split_sizes={k: len(v) for k, v in self.split_indices.items()}, split_hash=self.split_hash
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        images, labels = _load()
        x = F.interpolate(
            torch.from_numpy(images)[:, None],
            size=self.hparams.image_size,
            mode="bilinear",
            align_corners=False,
        )
        x = ((x - DIGITS_MEAN) / DIGITS_STD).expand(-1, 3, -1, -1).contiguous()
        y = torch.from_numpy(labels)
        # Shifted-in pixels take the normalised background value (0 before normalisation).
        shift = RandomShift(self.hparams.max_shift, fill=-DIGITS_MEAN / DIGITS_STD)
        split = {k: torch.from_numpy(v) for k, v in self.split_indices.items()}
        self.data_train = TensorImageDataset(x[split["train"]], y[split["train"]], shift)
        self.data_train_eval = TensorImageDataset(x[split["train"]], y[split["train"]])
        self.data_val = TensorImageDataset(x[split["val"]], y[split["val"]])
        self.data_test = TensorImageDataset(x[split["test"]], y[split["test"]])
