"""Front activations over a dataset split, computed the same way (batches, preprocessing, order) on every
path, so that ``stitching fit`` and ``stitching bench`` fit the same least-squares adapter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stitching.cuts import ActivationSpec, CutPoint

ACTIVATION_BATCH_SIZE = 256
"""Images per forward pass of a frozen front when its activations are computed once."""


def eval_loader(dataset: Dataset, batch_size: int = ACTIVATION_BATCH_SIZE, **loader_kwargs) -> DataLoader:
    """A loader over ``dataset`` in its fixed order (no shuffling), for computing activations once."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_kwargs)


def front_batches(front: nn.Module, loader: Iterable, device: str | torch.device) -> Iterator[torch.Tensor]:
    """``front`` applied to each image batch of ``loader`` (frozen: no graph), on ``device``."""
    with torch.no_grad():
        for x, _ in loader:
            yield front(x.to(device))


def paired_batches(
    sources: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(source, target) activation batches in order, as float32: the data of a least-squares fit."""
    for i in range(0, len(sources), batch_size):
        yield sources[i : i + batch_size].float(), targets[i : i + batch_size].float()


def activation_spec(activation: torch.Tensor, cut: CutPoint) -> ActivationSpec:
    """The spec of an actual activation at ``cut`` (its grid may differ from the model's default size)."""
    grid = cut.spec.grid if activation.ndim == 3 else None
    if grid is not None and grid[0] * grid[1] != activation.shape[1] - cut.spec.num_prefix_tokens:
        grid = None  # the dataset's input size differs from the model's default: infer a square grid
    return ActivationSpec.from_tensor(activation[:1], cut.spec.num_prefix_tokens, grid)
