"""Ridge R^2: how much of y a regularised linear map from x explains (a training-free linear stitch)."""

from __future__ import annotations

import torch
from torch import Tensor

from stitching.metrics.functional._checks import (
    _centre_,
    _check_pair,
    _float64,
    _require_variation,
    _warn_if_underdetermined,
)


def _ridge_predict(x: Tensor, y: Tensor, x_eval: Tensor, lam: float) -> Tensor:
    """Centred ridge predictions for ``x_eval``, solving the smaller of the primal (D x D) or dual (N x N)."""
    n, d = x.shape
    if lam == 0.0:
        return x_eval @ torch.linalg.lstsq(x, y, driver="gelsd").solution
    if n >= d:
        gram = x.T @ x
        gram.diagonal().add_(lam)
        return x_eval @ torch.cholesky_solve(x.T @ y, torch.linalg.cholesky(gram))
    gram = x @ x.T
    gram.diagonal().add_(lam)
    return (x_eval @ x.T) @ torch.cholesky_solve(y, torch.linalg.cholesky(gram))


def ridge_r2(
    x: Tensor,
    y: Tensor,
    alpha: float = 1e-3,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
) -> Tensor:
    """R^2 of the ridge regression of y on x (with intercept), variance-weighted over y's columns.

    The penalty is ``alpha * tr(X_c^T X_c) / Dx`` (``alpha`` times the mean eigenvalue of the centred scatter
    matrix), so the value does not depend on the scale of x. ``alpha=0`` is least squares (minimum norm).

    Args:
        x: ``(N, Dx)`` inputs, y: ``(N, Dy)`` targets used to fit the map.
        alpha: relative ridge strength, >= 0.
        x_test, y_test: optional held-out pair to score on; by default the score is in-sample, which warns
            when N <= Dx (any y can then be fitted exactly).

    Returns:
        ``1 - SSE / SST`` as a float64 scalar, i.e. sklearn's ``r2_score(..., "variance_weighted")`` of a
        ``Ridge(alpha=alpha * tr / Dx)`` fit. Asymmetric: x predicts y. Higher is better, at most 1.
    """
    if alpha < 0:
        raise ValueError(f"ridge_r2: alpha must be >= 0, got {alpha}")
    if (x_test is None) != (y_test is None):
        raise ValueError("ridge_r2: pass both x_test and y_test, or neither")
    _check_pair(x, y, "ridge_r2", min_samples=2)
    x, y = _float64(x, "x", "ridge_r2"), _float64(y, "y", "ridge_r2")
    x_mean = _centre_(x, "x", "ridge_r2")  # means kept to centre the test pair
    y_raw, y_mean = torch.linalg.norm(y), y.mean(0, keepdim=True)
    y.sub_(y_mean)  # a constant y is checked below, on whichever y is scored
    lam = alpha * float(x.square().sum()) / x.shape[1]
    if x_test is None:
        _warn_if_underdetermined(x.shape[0], (x.shape[1],), "ridge_r2")
        x_eval, y_eval, scored = x, y, "y"
    else:
        _check_pair(x_test, y_test, "ridge_r2 (test)", min_samples=2)
        if x_test.shape[1] != x.shape[1] or y_test.shape[1] != y.shape[1]:
            raise ValueError("ridge_r2: x_test / y_test must have the same feature dims as x / y")
        x_eval = _float64(x_test, "x_test", "ridge_r2") - x_mean
        y_eval, scored = _float64(y_test, "y_test", "ridge_r2"), "y_test"
        y_eval -= y_mean
        y_raw = torch.linalg.norm(y_eval)  # the scale of what is centred below (an all-zero y_test is not 0)
    y_centred = y_eval - y_eval.mean(0, keepdim=True)
    _require_variation(y_centred, scored, "ridge_r2 (R^2 divides by its variance)", y_raw)
    residual = y_eval - _ridge_predict(x, y, x_eval, lam)
    return 1 - residual.square().sum() / y_centred.square().sum()
