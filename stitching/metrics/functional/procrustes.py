"""Orthogonal Procrustes similarity and its angular shape distance (Williams et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from stitching.metrics.functional._checks import _centred_pair


def _cross_nuclear_norm(x: Tensor, y: Tensor) -> Tensor:
    """Nuclear norm of ``X^T Y`` without forming a large D x D matrix when N < D.

    With thin QR factorisations ``X^T = Q_x R_x`` and ``Y^T = Q_y R_y`` (Q orthonormal columns),
    ``X^T Y = Q_x (R_x R_y^T) Q_y^T`` has the singular values of the small ``R_x R_y^T``.
    """
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    if n >= max(dx, dy):
        return torch.linalg.svdvals(x.T @ y).sum()
    rx = torch.linalg.qr(x.T, mode="r").R if n < dx else x.T
    ry = torch.linalg.qr(y.T, mode="r").R if n < dy else y.T
    return torch.linalg.svdvals(rx @ ry.T).sum()


def procrustes(x: Tensor, y: Tensor) -> Tensor:
    """Orthogonal Procrustes similarity ``||X^T Y||_* / (||X||_F ||Y||_F)`` on column-centred float64 inputs.

    It is ``max_Q <X Q, Y>`` over orthogonal Q after scaling both sides to unit Frobenius norm (the narrower
    side is zero-padded), so it lies in [0, 1] and is 1 iff Y is a rotation/reflection of X up to scale and
    translation. Invariant to orthogonal transforms, isotropic scaling, translation and joint sample
    permutation.
    """
    x, y = _centred_pair(x, y, "procrustes", min_samples=2)
    return _cross_nuclear_norm(x, y) / (torch.linalg.norm(x) * torch.linalg.norm(y))


def procrustes_distance(x: Tensor, y: Tensor) -> Tensor:
    """Angular Procrustes shape distance ``arccos(procrustes(x, y))``, radians in [0, pi/2]; lower: closer.

    A metric on shapes (Williams et al. 2021, "Generalized shape metrics on neural representations"). The
    similarity is snapped to 1 within ``64 eps`` (~1.4e-14) of it: arccos amplifies the last-bit rounding of
    identical inputs to ~1e-7 rad, so distances below ~1.7e-7 rad read as 0.
    """
    return _arccos_snapped(procrustes(x, y))


def _arccos_snapped(similarity: Tensor) -> Tensor:
    snap = 64 * torch.finfo(torch.float64).eps
    return torch.arccos(torch.where(similarity >= 1 - snap, torch.ones_like(similarity), similarity))
