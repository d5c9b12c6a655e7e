"""Streaming CKA: torchmetrics ``Metric`` classes that accumulate over batches and sync by summation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from stitching.metrics.functional._checks import (
    DegenerateActivationError,
    _centred_pair,
    _check_pair,
    _float64,
)
from stitching.metrics.functional.cka import _debiased_hsic_terms, _debiased_ratio

_MOMENT_TOLERANCE = 1e-13
"""Centring second moments at compute time leaves ~1e-16 of the raw moment for a constant input; a
covariance below this fraction of it (std below ~3e-7 of the mean) counts as constant."""


class LinearCKA(Metric):
    """Exact linear CKA over a stream of batches, from float64 sums of X^T X, Y^T Y, X^T Y and column sums.

    ``compute()`` equals :func:`~stitching.metrics.functional.linear_cka` on all samples concatenated,
    whatever the batching (states are summed across processes). Memory is O((Dx + Dy)^2), independent of N.
    The covariances are centred at compute time (``S_xy - s_x s_y^T / N``); float64 keeps the cancellation
    error at about 1e-16 * (|mean| / std)^2, negligible for activations.

    Args:
        num_features_x: Dx. num_features_y: Dy (default: Dx).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_features_x: int, num_features_y: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dx, dy = num_features_x, num_features_y or num_features_x
        f64 = {"dtype": torch.float64}
        self.add_state("sum_xx", torch.zeros(dx, dx, **f64), dist_reduce_fx="sum")
        self.add_state("sum_yy", torch.zeros(dy, dy, **f64), dist_reduce_fx="sum")
        self.add_state("sum_xy", torch.zeros(dx, dy, **f64), dist_reduce_fx="sum")
        self.add_state("sum_x", torch.zeros(dx, **f64), dist_reduce_fx="sum")
        self.add_state("sum_y", torch.zeros(dy, **f64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), **f64), dist_reduce_fx="sum")

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch of paired ``(B, Dx)`` and ``(B, Dy)`` activations."""
        _check_pair(x, y, "LinearCKA", min_samples=1)
        if x.shape[1] != self.sum_x.numel() or y.shape[1] != self.sum_y.numel():
            raise ValueError(
                f"LinearCKA was built for Dx={self.sum_x.numel()}, Dy={self.sum_y.numel()}, got batches with "
                f"Dx={x.shape[1]}, Dy={y.shape[1]}"
            )
        x, y = _float64(x, "x", "LinearCKA"), _float64(y, "y", "LinearCKA")  # NaN/inf rejected per batch
        self.sum_xx += x.T @ x
        self.sum_yy += y.T @ y
        self.sum_xy += x.T @ y
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.num_samples += x.shape[0]

    def compute(self) -> Tensor:
        n = self.num_samples
        if n < 2:
            raise ValueError(f"LinearCKA needs at least 2 samples, got {int(n)}")
        cxy = self.sum_xy - torch.outer(self.sum_x, self.sum_y) / n
        cxx = self.sum_xx - torch.outer(self.sum_x, self.sum_x) / n
        cyy = self.sum_yy - torch.outer(self.sum_y, self.sum_y) / n
        norm_xx, norm_yy = torch.linalg.norm(cxx), torch.linalg.norm(cyy)
        for name, centred, raw in (("x", norm_xx, self.sum_xx), ("y", norm_yy, self.sum_yy)):
            if not centred > _MOMENT_TOLERANCE * torch.linalg.norm(raw):
                raise DegenerateActivationError(
                    f"LinearCKA: {name} is constant across samples (all zeros, a dead layer or every row "
                    "identical), so CKA is undefined; use another layer or cut"
                )
        return cxy.square().sum() / (norm_xx * norm_yy)


class DebiasedCKA(Metric):
    """Minibatch debiased CKA (Nguyen et al. 2021): unbiased HSIC averaged over batches, then the CKA ratio.

    ``compute() = mean_b HSIC_u(X_b, Y_b) / sqrt(mean_b HSIC_u(X_b, X_b) * mean_b HSIC_u(Y_b, Y_b))``.
    Each batch term is unbiased, so the average estimates the same population quantity as
    :func:`~stitching.metrics.functional.debiased_cka` on all samples, but it is a different (noisier) number
    unless there is one batch. Every batch needs B >= 4; use equal batch sizes, and shuffled batches. A batch
    that is constant on either side raises :class:`DegenerateActivationError` (its HSIC terms would be 0).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("hsic_xy", "hsic_xx", "hsic_yy", "num_batches"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add one batch of paired ``(B, Dx)`` and ``(B, Dy)`` activations, B >= 4."""
        hxy, hxx, hyy = _debiased_hsic_terms(*_centred_pair(x, y, "DebiasedCKA batch", min_samples=4))
        self.hsic_xy += hxy
        self.hsic_xx += hxx
        self.hsic_yy += hyy
        self.num_batches += 1

    def compute(self) -> Tensor:
        if self.num_batches == 0:
            raise ValueError("DebiasedCKA: no batches were added")
        return _debiased_ratio(self.hsic_xy, self.hsic_xx, self.hsic_yy)
