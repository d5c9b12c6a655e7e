"""Fast permutation nulls: each metric of ``(x, y[perm])`` for a batch of permutations, reusing per-side work.

A builder ``null(x, y, **kwargs)`` validates like the metric, does everything that does not depend on the
pairing once (centring, Gram matrices or feature products, k-NN lists, principal directions) and returns
``score(perms)``: for a ``(B, N)`` long tensor of row permutations, the ``(B,)`` float64 values of the
metric on ``(x, y[perm])``. They equal the metric called on the permuted rows up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from stitching.metrics.functional._checks import _centred_pair, _check_pair
from stitching.metrics.functional.cca import _top_directions
from stitching.metrics.functional.knn import (
    _check_topk,
    _cknna_cross,
    _cknna_denominator,
    _neighbours,
)
from stitching.metrics.functional.procrustes import _arccos_snapped

NullScorer = Callable[[Tensor], Tensor]
"""``score(perms)``: ``(B, N)`` permutations of y's rows -> ``(B,)`` float64 metric values."""

_CHUNK_ELEMENTS = 2**23  # float64 elements per temporary (64 MB)


def _chunks(perms: Tensor, per_perm: int) -> list[Tensor]:
    """Split a permutation batch so that each chunk's temporaries hold about ``_CHUNK_ELEMENTS`` values."""
    return list(perms.split(max(1, _CHUNK_ELEMENTS // max(1, per_perm))))


def _cross_hsic(x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """``tr(K P L P^T) = ||X^T P Y||_F^2`` for centred x, y and each permutation P of y's rows.

    Gathering the N x N Gram matrix ``L[p][:, p]`` costs about N^2 per permutation whatever the width;
    the feature form ``X^T Y[p]`` costs N Dx Dy multiply-adds in BLAS. The cheaper one is used.
    """
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    if dx * dy <= 150 * n:  # one gathered Gram entry costs ~150 BLAS multiply-adds (benchmarks/README.md)
        xt = x.T.contiguous()

        def feature(perms: Tensor) -> Tensor:
            out = [torch.matmul(xt, y[c]).square().sum((1, 2)) for c in _chunks(perms, n * dy + dx * dy)]
            return torch.cat(out)

        return feature
    k, l_ = (x @ x.T).flatten(), y @ y.T

    def gram(perms: Tensor) -> Tensor:
        return torch.stack([torch.dot(k, l_.index_select(0, p).index_select(1, p).flatten()) for p in perms])

    return gram


def linear_cka_null(x: Tensor, y: Tensor, form: str = "auto") -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.linear_cka` (``form`` does not change the value)."""
    x, y = _centred_pair(x, y, "linear_cka", min_samples=2)
    cross = _cross_hsic(x, y)
    norms = (x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()
    return lambda perms: cross(perms) / norms


def debiased_cka_null(x: Tensor, y: Tensor, form: str = "auto") -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.debiased_cka` (same unbiased HSIC terms)."""
    from stitching.metrics.functional.cka import _debiased_hsic_terms, _debiased_ratio

    x, y = _centred_pair(x, y, "debiased_cka", min_samples=4)
    n = x.shape[0]
    _, hxx, hyy = _debiased_hsic_terms(x, y)
    cross = _cross_hsic(x, y)
    kd, ld = x.square().sum(1), y.square().sum(1)
    sums = kd.sum() * ld.sum() / ((n - 1) * (n - 2))

    def score(perms: Tensor) -> Tensor:
        ab = ld[perms] @ kd  # diag(K) . diag(P L P^T)
        hxy = (cross(perms) - ab + sums - 2 * ab / (n - 2)) / (n * (n - 3))
        return _debiased_ratio(hxy, hxx, hyy)

    return score


def mutual_knn_null(x: Tensor, y: Tensor, topk: int = 10, block_size: int | None = None) -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.mutual_knn`: each side's k-NN lists once."""
    n = _check_pair(x, y, "mutual_knn", min_samples=2)
    _check_topk(topk, n, "mutual_knn", minimum=1)
    _, ix = _neighbours(x, topk, block_size, "mutual_knn", "x")
    _, iy = _neighbours(y, topk, block_size, "mutual_knn", "y")

    def score(perms: Tensor) -> Tensor:
        out = []
        for c in _chunks(perms, n * topk * topk):
            # y's lists after permuting its rows: row i is old row c[i], neighbours relabelled by c^-1.
            relabelled = c.argsort(1).gather(1, iy[c].flatten(1)).view(-1, n, 1, topk)
            overlap = (ix.unsqueeze(2) == relabelled).sum(dim=(1, 2, 3))
            out.append(overlap.double() / (n * topk))
        return torch.cat(out)

    return score


def cknna_null(
    x: Tensor, y: Tensor, topk: int = 10, block_size: int | None = None, eps: float = 0.0
) -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.cknna`: k-NN lists and self-HSICs once."""
    n = _check_pair(x, y, "cknna", min_samples=4)
    _check_topk(topk, n, "cknna", minimum=2)
    vx, ix = _neighbours(x, topk, block_size, "cknna", "x")
    vy, iy = _neighbours(y, topk, block_size, "cknna", "y")
    denom = _cknna_denominator(vx, ix, vy, iy, eps)

    def score(perms: Tensor) -> Tensor:
        out = []
        for c in _chunks(perms, n * topk * topk):
            relabelled = c.argsort(1).gather(1, iy[c].flatten(1)).view(-1, n, topk)
            out.append(_cknna_cross(vx, ix, vy[c], relabelled))
        return torch.cat(out) / denom

    return score


def procrustes_null(x: Tensor, y: Tensor) -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.procrustes`: centring and norms once."""
    x, y = _centred_pair(x, y, "procrustes", min_samples=2)
    if x.shape[0] < max(x.shape[1], y.shape[1]):  # N < D: the centred data's row space is smaller than D
        x, y = _row_space(x), _row_space(y)
    norms = torch.linalg.norm(x) * torch.linalg.norm(y)
    xt = x.T.contiguous()

    def score(perms: Tensor) -> Tensor:
        chunks = _chunks(perms, x.shape[0] * y.shape[1] + x.shape[1] * y.shape[1])
        return torch.cat([torch.linalg.svdvals(torch.matmul(xt, y[c])).sum(1) for c in chunks]) / norms

    return score


def _row_space(t: Tensor) -> Tensor:
    """``(N, min(N, D))`` coordinates of t's rows in an orthonormal basis of its row space (same Gram)."""
    u, s, _ = torch.linalg.svd(t, full_matrices=False)
    return u * s


def procrustes_distance_null(x: Tensor, y: Tensor) -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.procrustes_distance`."""
    similarity = procrustes_null(x, y)
    return lambda perms: _arccos_snapped(similarity(perms))


def svcca_null(x: Tensor, y: Tensor, keep: int | float | None = 0.99) -> NullScorer:
    """Fast null of :func:`~stitching.metrics.functional.svcca`: each side's principal directions once."""
    x, y = _centred_pair(x, y, "svcca", min_samples=2)
    ux, uy = _top_directions(x, keep, "x"), _top_directions(y, keep, "y")
    uxt = ux.T.contiguous()

    def score(perms: Tensor) -> Tensor:
        chunks = _chunks(perms, uy.shape[0] * uy.shape[1] + ux.shape[1] * uy.shape[1])
        return torch.cat([torch.linalg.svdvals(torch.matmul(uxt, uy[c])).mean(1) for c in chunks])

    return score
