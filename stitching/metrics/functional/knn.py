"""Nearest-neighbour alignment in the convention of the Platonic Representation Hypothesis code.

Port of ``mutual_knn`` and ``cknna`` from minyoungg/platonic-rep (``metrics.py``, called through
``measure_alignment.compute_score`` with its default ``normalize=True``): rows are L2-normalised, neighbours
are the largest inner products (cosine similarity), a sample is never its own neighbour, and no centring is
done. Known quirks of the reference, matched here:

- CKNNA's first HSIC term is ``sum(K~ * L~.T)`` on *masked* kernels, which are not symmetric (the k-NN
  relation is not), so it is ``tr(K~ L~)``, not the elementwise sum ``sum(K~ * L~)``.
- CKNNA adds ``1e-6`` to the denominator; ``eps=1e-6`` reproduces it, the default ``eps=0`` does not bias
  small values.
- Ties between equal similarities are broken arbitrarily (``argsort``/``topk`` order), in both codes.
- Not ported: the reference pipeline clips |features| at their 0.95 quantile before the metric
  (``prepare_features``) and runs in float32/TF32; we take features as given and work in float64.

Everything is computed blockwise from each side's top-k (values, indices), so memory is O(N k) plus one
float64 copy of the features and one ``block_size x N`` similarity block; no N x N matrix is formed.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from stitching.metrics.functional._checks import (
    RELATIVE_TOLERANCE,
    DegenerateActivationError,
    _check_pair,
    _float64,
)

_BLOCK_BYTES = 32 * 2**20  # similarity block budget: rows * N * 8 bytes


def _check_topk(topk: int, n: int, metric: str, minimum: int) -> None:
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < minimum:
        raise ValueError(f"{metric}: topk must be an int >= {minimum}, got {topk!r}")
    if topk > n - 1:
        raise ValueError(f"{metric}: topk={topk} needs N >= topk + 1 samples (self is excluded), got N={n}")


def _require_distinct_directions(z: Tensor, metric: str, side: str) -> None:
    """Error if every L2-normalised row is the same (or zero): all similarities then tie."""
    mean = z.mean(0, keepdim=True)
    rows = max(1, 2**20 // max(1, z.shape[1]))
    spread = sum(float((chunk - mean).square().sum()) for chunk in z.split(rows)) ** 0.5
    if not spread > RELATIVE_TOLERANCE * float(torch.linalg.norm(z)):
        raise DegenerateActivationError(
            f"{metric}: {side} has every row pointing the same way (constant, all zeros or all rows "
            "identical up to scale), so all similarities tie and the neighbours are arbitrary; use another "
            "layer or cut"
        )


def nearest_neighbours(x: Tensor, topk: int, block_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Top-k inner-product neighbours of each L2-normalised row of ``x``, self excluded, blockwise.

    Returns ``(values, indices)``, both ``(N, topk)``, values in float64 and sorted descending. Raises
    :class:`DegenerateActivationError` for NaN/inf or rows that all point the same way (all ties).
    """
    return _neighbours(x, topk, block_size, "nearest_neighbours", "x")


def _neighbours(
    x: Tensor, topk: int, block_size: int | None, metric: str, side: str
) -> tuple[Tensor, Tensor]:
    if x.ndim != 2:
        raise ValueError(f"{metric}: {side} must be 2-d (N, D), got shape {tuple(x.shape)}")
    n = x.shape[0]
    _check_topk(topk, n, metric, minimum=1)
    z = _float64(x, side, metric)  # one float64 copy, normalised in place
    z /= z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)  # zero rows stay zero
    _require_distinct_directions(z, metric, side)
    rows = block_size or max(1, _BLOCK_BYTES // (8 * n))
    values = torch.empty(n, topk, dtype=torch.float64, device=z.device)
    indices = torch.empty(n, topk, dtype=torch.long, device=z.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        sim = z[start:stop] @ z.T
        local = torch.arange(stop - start, device=z.device)
        sim[local, local + start] = -math.inf  # self is never a neighbour
        values[start:stop], indices[start:stop] = sim.topk(topk, dim=1)
    return values, indices


def mutual_knn(x: Tensor, y: Tensor, topk: int = 10, block_size: int | None = None) -> Tensor:
    """Mutual k-NN alignment: mean over samples of |kNN_x(i) & kNN_y(i)| / k (Huh et al. 2024).

    Args:
        x: ``(N, Dx)``, y: ``(N, Dy)`` features of the same samples; rows are L2-normalised internally.
        topk: neighbours per sample, ``1 <= topk <= N - 1``.
        block_size: rows of the similarity matrix computed at once (default: a 32 MB block).

    Returns:
        A float64 scalar in [0, 1]; 1 for identical inputs, ``topk / (N - 1)`` in expectation for
        independent data. Invariant to orthogonal transforms and scaling, not to translation.
    """
    n = _check_pair(x, y, "mutual_knn", min_samples=2)
    _check_topk(topk, n, "mutual_knn", minimum=1)
    _, ix = _neighbours(x, topk, block_size, "mutual_knn", "x")
    _, iy = _neighbours(y, topk, block_size, "mutual_knn", "y")
    overlap = (ix.unsqueeze(2) == iy.unsqueeze(1)).sum(dim=(1, 2))
    return overlap.double().mean() / topk


def _sparse_unbiased_hsic(
    n: int, rows: Tensor, cols: Tensor, a: Tensor, b: Tensor, batch: Tensor | None = None, size: int = 1
) -> Tensor:
    """Unbiased HSIC (Song et al. 2012) of two N x N matrices A, B with zero diagonal and the same sparse
    support ``(rows, cols)``, given their values ``a`` and ``b`` there; A, B need not be symmetric.

    Follows the reference term by term:
    ``sum(A * B.T) + sum(A) sum(B) / ((n-1)(n-2)) - 2 sum(A @ B) / (n-2)``,
    all over ``n(n-3)``, with ``sum(A @ B) = colsum(A) . rowsum(B)``. With ``batch`` (one index in
    ``[0, size)`` per entry) it computes ``size`` independent HSICs at once and returns shape ``(size,)``;
    without, a 0-d tensor.
    """
    if rows.numel() == 0:  # no shared support: every term is 0
        return torch.zeros(() if batch is None else size, dtype=a.dtype, device=a.device)
    group = torch.zeros_like(rows) if batch is None else batch
    keys = (group * n + rows) * n + cols
    order = keys.argsort()
    sorted_keys, sorted_b = keys[order], b[order]
    transposed = (group * n + cols) * n + rows  # where B_ji sits, if (j, i) is in the support
    pos = torch.searchsorted(sorted_keys, transposed).clamp_max(keys.numel() - 1)
    b_t = torch.where(sorted_keys[pos] == transposed, sorted_b[pos], torch.zeros_like(a))

    def total(values: Tensor, index: Tensor, bins: int) -> Tensor:
        return torch.zeros(bins, dtype=values.dtype, device=values.device).index_add_(0, index, values)

    col_sum_a = total(a, group * n + cols, size * n).view(size, n)
    row_sum_b = total(b, group * n + rows, size * n).view(size, n)
    value = (
        total(a * b_t, group, size)
        + total(a, group, size) * total(b, group, size) / ((n - 1) * (n - 2))
        - 2 * (col_sum_a * row_sum_b).sum(1) / (n - 2)
    ) / (n * (n - 3))
    return value[0] if batch is None else value


def cknna(x: Tensor, y: Tensor, topk: int = 10, block_size: int | None = None, eps: float = 0.0) -> Tensor:
    """Centred kernel nearest-neighbour alignment (CKNNA, Huh et al. 2024), as in the PRH reference code.

    Cosine kernels ``K``, ``L`` restricted to pairs (i, j) where j is among the top-k neighbours of i in
    *both* spaces; CKNNA = HSIC_u(K_m, L_m) / sqrt(HSIC_u(K_k, K_k) HSIC_u(L_l, L_l)) with each self-term
    masked by its own k-NN graph and HSIC_u the unbiased estimator. See the module docstring for the
    reference's quirks (``eps=1e-6`` reproduces its numbers exactly).

    Args:
        x: ``(N, Dx)``, y: ``(N, Dy)``; N >= 4 and ``2 <= topk <= N - 1``.
        block_size: rows of the similarity matrix computed at once (default: a 32 MB block).
        eps: added to the denominator; 0 (default) for the exact ratio, 1e-6 to match the reference.
    """
    n = _check_pair(x, y, "cknna", min_samples=4)
    _check_topk(topk, n, "cknna", minimum=2)
    vx, ix = _neighbours(x, topk, block_size, "cknna", "x")
    vy, iy = _neighbours(y, topk, block_size, "cknna", "y")
    return _cknna_cross(vx, ix, vy, iy) / _cknna_denominator(vx, ix, vy, iy, eps)


def _cknna_denominator(vx: Tensor, ix: Tensor, vy: Tensor, iy: Tensor, eps: float) -> Tensor:
    """``sqrt(HSIC_u(K_k, K_k) HSIC_u(L_l, L_l)) + eps``; NaN and a warning if a self-term is not positive."""
    product = _cknna_self(vx, ix) * _cknna_self(vy, iy)
    if not product > 0:
        warnings.warn(
            "cknna: the unbiased HSIC of a masked kernel with itself is not positive (too few samples or "
            "neighbours for this data?), so CKNNA is undefined; returning NaN. Use more samples or a larger "
            "topk.",
            stacklevel=3,
        )
        return torch.tensor(float("nan"), dtype=torch.float64, device=vx.device)
    return product.sqrt() + eps


def _cknna_self(v: Tensor, i: Tensor) -> Tensor:
    """HSIC_u of one side's cosine kernel masked by its own k-NN graph (``values, indices``, both (N, k))."""
    n, topk = i.shape
    own_rows = torch.arange(n, device=i.device).repeat_interleave(topk)
    return _sparse_unbiased_hsic(n, own_rows, i.flatten(), v.flatten(), v.flatten())


def _cknna_cross(vx: Tensor, ix: Tensor, vy: Tensor, iy: Tensor) -> Tensor:
    """HSIC_u of the two cosine kernels restricted to pairs that are neighbours in both spaces.

    ``vy``, ``iy`` may carry a leading batch dimension (B, N, k), giving B values (permutation nulls).
    """
    batched = iy.ndim == 3
    vy, iy = (vy, iy) if batched else (vy.unsqueeze(0), iy.unsqueeze(0))
    # Pairs neighbouring in both spaces: slot p of x's list matches slot q of y's list.
    batch, row, p, q = (ix.unsqueeze(2) == iy.unsqueeze(2)).nonzero(as_tuple=True)
    hsic = _sparse_unbiased_hsic(
        ix.shape[0], row, ix[row, p], vx[row, p], vy[batch, row, q], batch=batch, size=iy.shape[0]
    )
    return hsic if batched else hsic[0]
