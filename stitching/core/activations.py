"""Front activations over a dataset split, computed the same way (batches, preprocessing, order) on every
path, so that ``stitching fit`` and ``stitching bench`` fit the same least-squares adapter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

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


class ImageBatches:
    """The images of a dataset by index, the last batch remembered: the fronts that stream from the same
    split in one training step (the stitched source, the random-source control, the target) load and
    decode each image once. With ``workers`` > 1 a batch's images are loaded by that many threads (image
    decoding and resizing release the GIL), so no worker process is started per batch."""

    def __init__(self, dataset: Dataset, workers: int = 0) -> None:
        self.dataset, self.workers = dataset, workers
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at ``idx`` (1-d indices), stacked."""
        if self._last is not None and torch.equal(self._last[0], idx):
            return self._last[1]
        indices = idx.tolist()
        if self.workers > 1 and len(indices) > 1:
            self._pool = self._pool or ThreadPoolExecutor(self.workers, thread_name_prefix="images")
            samples = list(self._pool.map(self.dataset.__getitem__, indices))
        else:
            samples = [self.dataset[i] for i in indices]
        images = torch.stack([sample[0] for sample in samples])
        self._last = (idx.clone(), images)
        return images


class StreamedActivations:
    """What a cached activation tensor is to its readers, computed on demand: ``x[idx]`` runs the frozen
    ``front`` on the images at ``idx`` under ``torch.no_grad()`` (and the speed switches' autocast), on
    ``device``, rounded through ``dtype`` as a cache of that dtype would store it. Readers (training, the
    least-squares fit, scoring) index it exactly as they index a cached tensor."""

    def __init__(
        self,
        images: ImageBatches,
        front: nn.Module,
        sample_shape: tuple[int, ...],
        device: str | torch.device,
        dtype: torch.dtype = torch.float32,
        autocast=None,
    ) -> None:
        self.images, self.front, self.device, self.dtype = images, front, device, dtype
        self.shape = torch.Size((len(images), *sample_shape))
        self._autocast = autocast

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        if isinstance(index, slice):
            index = torch.arange(*index.indices(len(self)))
        index = torch.as_tensor(index).reshape(-1)
        x = self.images.get(index).to(self.device)
        with torch.no_grad(), self._autocast(self.device) if self._autocast else nullcontext():
            out = self.front(x)
        return out.to(self.dtype).cpu()  # readers gather batches from host memory, as from a cache
