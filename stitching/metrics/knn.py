"""k-NN alignment over a stream: store a subsample of features, compute blockwise at the end."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from stitching.metrics.functional._checks import _check_pair
from stitching.metrics.functional.knn import cknna, mutual_knn


class _StoredSubsampleMetric(Metric):
    """Keeps the first ``max_samples`` rows seen on each process (then gathered with ``cat``).

    k-NN metrics need all pairs, so they cannot be summed over batches; the stored rows are processed
    blockwise (:func:`~stitching.metrics.functional.nearest_neighbours`). Shuffle the stream if it is ordered
    (e.g. by class), or the subsample is not representative.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, topk: int = 10, max_samples: int = 10_000, block_size: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        self.topk, self.max_samples, self.block_size = topk, max_samples, block_size
        self.add_state("feats_x", [], dist_reduce_fx="cat")
        self.add_state("feats_y", [], dist_reduce_fx="cat")

    def update(self, x: Tensor, y: Tensor) -> None:
        """Store paired ``(B, Dx)`` and ``(B, Dy)`` rows until ``max_samples`` are held."""
        _check_pair(x, y, type(self).__name__, min_samples=1)
        room = self.max_samples - sum(t.shape[0] for t in self.feats_x)
        if room > 0:
            self.feats_x.append(x[:room].detach())
            self.feats_y.append(y[:room].detach())

    def _stored(self) -> tuple[Tensor, Tensor]:
        if not self.feats_x:
            raise ValueError(f"{type(self).__name__}: no samples were added")
        return dim_zero_cat(self.feats_x), dim_zero_cat(self.feats_y)


class MutualKNN(_StoredSubsampleMetric):
    """Streaming :func:`~stitching.metrics.functional.mutual_knn` on the first ``max_samples`` rows."""

    def compute(self) -> Tensor:
        return mutual_knn(*self._stored(), topk=self.topk, block_size=self.block_size)


class CKNNA(_StoredSubsampleMetric):
    """Streaming :func:`~stitching.metrics.functional.cknna` on the first ``max_samples`` rows."""

    def compute(self) -> Tensor:
        return cknna(*self._stored(), topk=self.topk, block_size=self.block_size)
