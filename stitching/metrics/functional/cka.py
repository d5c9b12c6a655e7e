"""Linear centred kernel alignment: biased (Kornblith et al. 2019) and debiased (Song et al. 2012).

Both centre the columns and work in float64. Where N is large relative to D they never build an N x N
matrix: with centred X, Y the Gram traces reduce to feature-space products, ``tr(KL) = ||X^T Y||_F^2``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from stitching.metrics.functional._checks import _centred_pair, _gram_is_cheaper

Form = Literal["auto", "feature", "gram"]


def _resolve_form(form: Form, n: int, dx: int, dy: int) -> str:
    if form not in ("auto", "feature", "gram"):
        raise ValueError(f"form must be 'auto', 'feature' or 'gram', got {form!r}")
    if form == "auto":
        return "gram" if _gram_is_cheaper(n, dx, dy) else "feature"
    return form


def _trace_products(x: Tensor, y: Tensor, form: str) -> tuple[Tensor, Tensor, Tensor]:
    """``tr(KL), tr(KK), tr(LL)`` for ``K = X X^T`` and ``L = Y Y^T`` (x, y centred float64)."""
    if form == "feature":
        return (x.T @ y).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    k, l_ = x @ x.T, y @ y.T
    return (k * l_).sum(), k.square().sum(), l_.square().sum()


def linear_cka(x: Tensor, y: Tensor, form: Form = "auto") -> Tensor:
    """Linear CKA: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred float64 inputs.

    Args:
        x: ``(N, Dx)`` activations. y: ``(N, Dy)`` activations of the same N samples.
        form: ``"feature"`` uses D x D products (O(N D^2) time, O(D^2) memory), ``"gram"`` uses N x N Gram
            matrices (O(N^2 D), O(N^2) memory); ``"auto"`` picks the cheaper (feature when N > ~1.5 D).

    Returns:
        A float64 scalar in [0, 1]; 1 for identical inputs. Invariant to orthogonal transforms, isotropic
        scaling and translation of either side, and to permuting samples jointly. No eps is added.
    """
    x, y = _centred_pair(x, y, "linear_cka", min_samples=2)
    kl, kk, ll = _trace_products(x, y, _resolve_form(form, x.shape[0], x.shape[1], y.shape[1]))
    return kl / (kk.sqrt() * ll.sqrt())


def _debiased_hsic_terms(x: Tensor, y: Tensor, form: Form = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of (x, y), (x, x), (y, y) for centred float64 inputs, N >= 4.

    With ``K~ = K - diag(K)`` the estimator is ``[tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2 1'K~L~1/(n-2)]
    / (n(n-3))``. For centred X, ``K 1 = 0``, so ``K~ 1 = -k`` with ``k = diag(K)``, which gives
    ``tr(K~L~) = tr(KL) - k.l``, ``1'K~1 = -sum(k)`` and ``1'K~L~1 = k.l``: no N x N matrix is needed.
    """
    n = x.shape[0]
    kl, kk, ll = _trace_products(x, y, _resolve_form(form, n, x.shape[1], y.shape[1]))
    kd, ld = x.square().sum(1), y.square().sum(1)

    def hsic(tr_ab: Tensor, a: Tensor, b: Tensor) -> Tensor:
        ab = a @ b
        return (tr_ab - ab + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 * ab / (n - 2)) / (n * (n - 3))

    return hsic(kl, kd, ld), hsic(kk, kd, kd), hsic(ll, ld, ld)


def _debiased_ratio(hxy: Tensor, hxx: Tensor, hyy: Tensor) -> Tensor:
    denom = hxx * hyy
    if denom <= 0:
        warnings.warn(
            "debiased_cka: the unbiased HSIC of an input with itself is not positive (too few samples for "
            "this data?), so CKA is undefined; returning NaN. Use more samples.",
            stacklevel=3,
        )
        return torch.tensor(float("nan"), dtype=torch.float64)
    return hxy / denom.sqrt()


def debiased_cka(x: Tensor, y: Tensor, form: Form = "auto") -> Tensor:
    """Debiased linear CKA: CKA with the unbiased HSIC of Song et al. (2012), as in Nguyen et al. 2021.

    Unlike biased CKA it is about 0 for independent data at any N / D ratio. Needs N >= 4 (the estimator
    divides by N(N-3)). Same invariances as :func:`linear_cka`; the value can be slightly negative.
    ``form`` is as in :func:`linear_cka`.
    """
    x, y = _centred_pair(x, y, "debiased_cka", min_samples=4)
    return _debiased_ratio(*_debiased_hsic_terms(x, y, form))
