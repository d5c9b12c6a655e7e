"""SVCCA (Raghu et al. 2017) with exact SVDs: SVD-reduce each side, then mean canonical correlation."""

from __future__ import annotations

import torch
from torch import Tensor

from stitching.metrics.functional._checks import _centred_pair, _warn_if_underdetermined


def _top_directions(x: Tensor, keep: int | float | None, name: str) -> Tensor:
    """Orthonormal basis ``(N, k)`` of the top-k principal directions of centred ``x`` (exact thin SVD)."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    # Numerical rank, numpy.linalg.matrix_rank convention: directions below it are noise, not signal.
    rank = int((s > s[0] * max(x.shape) * torch.finfo(s.dtype).eps).sum())
    if keep is None:
        k = rank
    elif isinstance(keep, float):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"svcca: a float keep is a variance fraction in (0, 1], got {keep}")
        explained = s[:rank].square().cumsum(0) / s[:rank].square().sum()
        k = min(int(torch.searchsorted(explained, torch.tensor(keep, dtype=s.dtype))) + 1, rank)
    elif isinstance(keep, int) and not isinstance(keep, bool) and keep >= 1:
        if keep > rank:
            raise ValueError(
                f"svcca: keep={keep} directions but {name} has rank {rank} (N={x.shape[0]}, "
                f"D={x.shape[1]}); pass keep <= {rank} or a variance fraction such as keep=0.99"
            )
        k = keep
    else:
        raise ValueError(f"svcca: keep must be None, an int >= 1 or a float in (0, 1], got {keep!r}")
    return u[:, :k]


def canonical_correlations(x: Tensor, y: Tensor, keep: int | float | None = 0.99) -> Tensor:
    """Canonical correlations (descending, ``min(kx, ky)`` values) between the SVD-reduced x and y."""
    x, y = _centred_pair(x, y, "svcca", min_samples=2)
    _warn_if_underdetermined(x.shape[0], (x.shape[1], y.shape[1]), "svcca")
    # The reduced data U_k S_k spans the same space as U_k, whose columns are orthonormal and centred,
    # so the canonical correlations are the singular values of U_x^T U_y.
    return torch.linalg.svdvals(_top_directions(x, keep, "x").T @ _top_directions(y, keep, "y"))


def svcca(x: Tensor, y: Tensor, keep: int | float | None = 0.99) -> Tensor:
    """SVCCA: mean canonical correlation after keeping each side's top principal directions.

    Args:
        x: ``(N, Dx)``, y: ``(N, Dy)``.
        keep: a float in (0, 1] keeps the fewest directions explaining that fraction of variance (0.99 as in
            Raghu et al.); an int keeps that many (``keep=1`` is one direction, ``keep=1.0`` all variance);
            None keeps the full numerical rank (plain mean CCA).

    Returns:
        A float64 scalar in [0, 1], 1 for identical inputs. Warns when N <= D, where CCA is meaningless.
        Unlike the PRH code, features are not standardised and the SVD is exact (not randomised).
    """
    return canonical_correlations(x, y, keep).mean()
