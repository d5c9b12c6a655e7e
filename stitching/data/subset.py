"""A documented training subset: a fixed number of images per class, drawn with a recorded seed."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """The label of every sample, read without decoding images where the dataset keeps its labels
    (``targets`` of torchvision datasets, ``labels`` of in-memory ones, through ``Subset``s)."""
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset)[np.asarray(dataset.indices)]
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            labels = getattr(dataset, attr)
            return labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])  # decodes every image: slow


def class_counts(targets: np.ndarray, num_classes: int) -> list[int]:
    """Images per class."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


def subset_problem(counts: list[int], per_class: int) -> str | None:
    """Why ``per_class`` images of every class cannot be drawn from a split with ``counts``, or None."""
    if per_class < 1:
        return f"train_per_class: {per_class}; give at least 1 image per class (or null: the whole split)"
    short = [(c, n) for c, n in enumerate(counts) if n < per_class]
    if not short:
        return None
    c, n = min(short, key=lambda cn: cn[1])
    return (
        f"train_per_class: {per_class} images per class, but the training split has only {n} of class {c} "
        f"({len(short)} of {len(counts)} classes have fewer than {per_class}); give at most {min(counts)}, "
        "or null for the whole split"
    )


def draw_subset(targets: np.ndarray, per_class: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of every class, each class's drawn by a generator seeded
    with ``seed`` (the same seed gives the same subset). Raises ``ValueError`` naming the class when one
    has fewer samples than asked for."""
    targets = np.asarray(targets, dtype=np.int64)
    num_classes = num_classes if num_classes is not None else int(targets.max()) + 1
    problem = subset_problem(class_counts(targets, num_classes), per_class)
    if problem:
        raise ValueError(problem)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(targets == c)
        pick = torch.randperm(len(members), generator=generator)[:per_class].numpy()
        chosen.append(members[pick])
    return np.sort(np.concatenate(chosen))


def indices_hash(indices: np.ndarray) -> str:
    """12 hex characters identifying an index set."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]
