"""Datasets of a suite: ``{class_path, init_args}`` specs of LightningDataModules, and their splits."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import instantiate_class
from torch.utils.data import DataLoader, Dataset, Subset

from stitching.data.subset import class_counts, dataset_targets, draw_subset

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


def split_dataset(
    datamodule: pl.LightningDataModule, split: str, per_class: int | None = None, seed: int = 0
) -> Dataset:
    """The dataset of one split, with evaluation transforms (no augmentation), in a fixed order; with
    ``per_class``, the training split is the subset of that many images per class drawn with ``seed``
    (:func:`stitching.data.subset.draw_subset`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    dataset = datamodule.eval_dataset(split)
    if split == "train" and per_class is not None:
        targets = dataset_targets(dataset)
        dataset = Subset(dataset, draw_subset(targets, per_class, seed, datamodule.num_classes).tolist())
    return dataset


def split_loader(
    datamodule: pl.LightningDataModule,
    split: str,
    batch_size: int,
    per_class: int | None = None,
    seed: int = 0,
) -> DataLoader:
    """A non-shuffled loader over one split (or the training subset), for computing activations once."""
    return DataLoader(
        split_dataset(datamodule, split, per_class, seed),
        batch_size=batch_size,
        shuffle=False,
        num_workers=getattr(datamodule, "num_workers", 0),
        pin_memory=getattr(datamodule, "pin_memory", False),
    )


@dataclass
class DatasetFacts:
    """What a plan needs to know of a dataset: its input size, split sizes and images per class."""

    input_size: tuple[int, ...] | None
    """(C, H, W) of one image after preprocessing."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Images per split (empty: unknown)."""
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    """Images per class of each split (empty: unknown)."""
    note: str = ""
    """Where the facts come from when the data is not here."""
    num_classes: int | None = None
    """Classes (from the data, or the suite's ``activations.num_classes`` when the data is not here)."""


def describe_dataset(
    spec: dict[str, Any], expected_sizes: dict[str, int] | None = None, num_classes: int | None = None
) -> DatasetFacts:
    """The dataset's input size, split sizes and class counts, from the data when it is on this machine
    (nothing downloaded, no image decoded but one), else from ``expected_sizes`` and the preprocessing
    config in its ``init_args``."""
    try:
        datamodule = instantiate_class(
            (), {"class_path": spec["class_path"], "init_args": spec.get("init_args", {})}
        )
        datamodule.setup("fit")
        datamodule.setup("test")
        datasets = {split: datamodule.eval_dataset(split) for split in SPLITS}
    except (FileNotFoundError, RuntimeError, OSError) as err:
        sizes = dict(expected_sizes or {})
        note = f"data not here ({str(err).splitlines()[0]}); " + (
            "sizes from activations.split_sizes" if sizes else "sizes unknown: set activations.split_sizes"
        )
        return DatasetFacts(_configured_input_size(spec.get("init_args", {})), sizes, {}, note, num_classes)
    num_classes = datamodule.num_classes
    return DatasetFacts(
        tuple(datasets["test"][0][0].shape),
        {split: len(ds) for split, ds in datasets.items()},
        {split: class_counts(dataset_targets(ds), num_classes) for split, ds in datasets.items()},
        num_classes=num_classes,
    )


def _configured_input_size(init_args: dict[str, Any]) -> tuple[int, ...] | None:
    """(C, H, W) from a datamodule's ``model_name``/``data_config``/``image_size`` arguments."""
    from stitching.data.transforms import resolve_data_config

    config = resolve_data_config(init_args.get("model_name"), init_args.get("data_config"))
    if config is not None:
        return tuple(config["input_size"])
    size = init_args.get("image_size")
    return (3, size, size) if size else None
