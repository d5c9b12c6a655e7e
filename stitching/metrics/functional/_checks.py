"""Input validation and float64 preparation shared by the functional metrics."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


class DegenerateActivationError(ValueError):
    """An activation a metric is undefined on: NaN/inf, constant across samples (all zeros, a dead layer,
    every row identical) or, for k-NN metrics, every row pointing the same way (all similarities tied)."""


RELATIVE_TOLERANCE = 1e-12
"""Variation below this fraction of an input's norm is rounding residue (centring a constant column in
float64 leaves ~1e-16 of it), so the input counts as constant."""


def _check_pair(x: Tensor, y: Tensor, metric: str, min_samples: int) -> int:
    """Check that ``x`` and ``y`` are (N, D) tensors with the same N >= ``min_samples``; return N."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{metric}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(
                f"{metric}: {name} must be 2-d (N, D), got shape {tuple(t.shape)}; reduce feature maps "
                "or tokens first with stitching.metrics.functional.reduce_activation(x, rule)"
            )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{metric}: x and y must hold the same samples in the same order, got N={x.shape[0]} and "
            f"N={y.shape[0]}"
        )
    n = x.shape[0]
    if n < min_samples:
        raise ValueError(f"{metric} needs at least {min_samples} samples, got N={n}; pass more samples")
    return n


def _float64(t: Tensor, name: str, metric: str) -> Tensor:
    """A detached float64 copy of ``t`` (never a view: callers may modify it in place); NaN/inf rejected."""
    t = t.detach().to(torch.float64, copy=True)
    # Row chunks: torch.isfinite on the whole matrix allocates temporaries larger than the matrix itself.
    rows = max(1, 2**20 // max(1, t.shape[-1]))
    if not all(bool(torch.isfinite(chunk).all()) for chunk in t.split(rows)):
        raise DegenerateActivationError(f"{metric}: {name} contains NaN or inf values")
    return t


def _centred_pair(x: Tensor, y: Tensor, metric: str, min_samples: int) -> tuple[Tensor, Tensor]:
    """Validate, convert to float64 and centre each column: the first step of every kernel metric.

    Raises :class:`DegenerateActivationError` for NaN/inf or a side that is constant across samples.
    """
    _check_pair(x, y, metric, min_samples)
    x = _float64(x, "x", metric)
    y = _float64(y, "y", metric)
    _centre_(x, "x", metric)  # in place: one copy per side
    _centre_(y, "y", metric)
    return x, y


def _centre_(t: Tensor, name: str, metric: str) -> Tensor:
    """Centre ``t``'s columns in place and return the column means; a constant ``t`` is an error."""
    raw = torch.linalg.norm(t)
    mean = t.mean(0, keepdim=True)
    _require_variation(t.sub_(mean), name, metric, raw)
    return mean


def _require_variation(centred: Tensor, name: str, metric: str, raw_norm: Tensor) -> None:
    """Error unless the centred input's norm exceeds ``RELATIVE_TOLERANCE`` times its uncentred norm."""
    if not torch.linalg.norm(centred) > RELATIVE_TOLERANCE * raw_norm:
        raise DegenerateActivationError(
            f"{metric}: {name} is constant across samples (all zeros, a dead layer or every row identical, "
            f"up to a relative {RELATIVE_TOLERANCE:g}), so the metric is undefined; use another layer or cut"
        )


def _warn_if_underdetermined(n: int, dims: tuple[int, ...], metric: str) -> None:
    """Warn when N <= D: a linear map or CCA can then fit any target exactly and the value is meaningless."""
    d = max(dims)
    if n <= d:
        warnings.warn(
            f"{metric}: N={n} samples <= D={d} features; the fitted linear map / canonical directions can "
            "match anything, so the value says little about alignment. Use N well above D (or reduce D).",
            stacklevel=3,
        )


def _gram_is_cheaper(n: int, dx: int, dy: int) -> bool:
    """True when N x N Gram matrices cost less than D x D feature-space products (roughly N < 1.5 D)."""
    return n * n * (dx + dy) < n * (dx * dx + dy * dy + dx * dy)
