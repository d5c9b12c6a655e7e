"""Datasets of a suite: ``{class_path, init_args}`` specs of LightningDataModules, and their splits."""

from __future__ import annotations

import importlib
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import DataLoader, Dataset

SPLITS = ("train", "val", "test")


def dataset_problems(spec: dict[str, Any]) -> list[str]:
    """Problems with a datamodule spec, without instantiating it (which may read or download data)."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        return ["dataset: expected {class_path: ..., init_args: {...}}"]
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        return [f"dataset: unknown key(s) {sorted(unknown)}; valid: class_path, init_args"]
    module_name, _, class_name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        from stitching import data

        ours = ", ".join(f"stitching.data.{n}" for n in data.__all__ if n.endswith("DataModule"))
        return [f"dataset: cannot import {spec['class_path']!r}; ours: {ours}"]
    if not issubclass(cls, pl.LightningDataModule):
        return [f"dataset: {spec['class_path']} is not a LightningDataModule"]
    return []


def build_datamodule(spec: dict[str, Any]) -> pl.LightningDataModule:
    """Instantiate and set up a datamodule from its spec."""
    datamodule = instantiate_class(
        (), {"class_path": spec["class_path"], "init_args": spec.get("init_args", {})}
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def split_dataset(datamodule: pl.LightningDataModule, split: str) -> Dataset:
    """The dataset of one split, with evaluation transforms (no augmentation), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return datamodule.eval_dataset(split)


def split_loader(datamodule: pl.LightningDataModule, split: str, batch_size: int) -> DataLoader:
    """A non-shuffled loader over one split, for computing activations once."""
    return DataLoader(
        split_dataset(datamodule, split),
        batch_size=batch_size,
        shuffle=False,
        num_workers=getattr(datamodule, "num_workers", 0),
        pin_memory=getattr(datamodule, "pin_memory", False),
    )
