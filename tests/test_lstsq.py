"""RidgeRegression (streaming float64 normal equations) against NumPy and scikit-learn on seeded data."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from stitching.adapters import RidgeRegression


def _data(n=300, d=7, k=5, seed=0):
    rng = np.random.default_rng(seed)
    # Correlated, off-centre inputs: the case where centring and conditioning matter.
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    y = x @ rng.normal(size=(d, k)) + 0.5 * rng.normal(size=(n, k)) - 2.0
    return x, y


def _fit(x, y, batch=None, **kw):
    reg = RidgeRegression(x.shape[1], y.shape[1], **kw)
    batch = batch or len(x)
    for i in range(0, len(x), batch):
        reg.update(torch.from_numpy(x[i : i + batch]), torch.from_numpy(y[i : i + batch]))
    return reg


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [1e-3, 0.5])
def test_solve_matches_sklearn_ridge(fit_intercept, alpha):
    x, y = _data()
    reg = _fit(x, y, fit_intercept=fit_intercept)
    xc = x - x.mean(0) if fit_intercept else x
    lam = alpha * np.trace(xc.T @ xc) / x.shape[1]  # relative alpha, documented scaling
    assert reg.penalty(alpha) == pytest.approx(lam, rel=1e-12)
    ref = Ridge(alpha=lam, fit_intercept=fit_intercept, solver="cholesky").fit(x, y)
    weight, bias = reg.solve(alpha)
    assert weight.dtype == torch.float64 and weight.shape == (5, 7)
    np.testing.assert_allclose(weight.numpy(), ref.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(bias.numpy(), np.broadcast_to(ref.intercept_, (5,)), rtol=0, atol=1e-8)


def test_alpha_zero_is_ordinary_least_squares():
    x, y = _data()
    weight, bias = _fit(x, y).solve(0.0)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    np.testing.assert_allclose(weight.numpy(), coef[:-1].T, atol=1e-8)
    np.testing.assert_allclose(bias.numpy(), coef[-1], atol=1e-8)


def test_multi_batch_and_merge_equal_single_batch():
    x, y = _data(n=301)
    single = _fit(x, y).solve(1e-2)
    batched = _fit(x, y, batch=37).solve(1e-2)  # uneven last batch
    merged = _fit(x[:100], y[:100]).merge(_fit(x[100:], y[100:], batch=50)).solve(1e-2)
    for other in (batched, merged):
        for a, b in zip(single, other, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-10)


def test_float32_batches_are_accumulated_in_float64():
    x, y = _data()
    reg = RidgeRegression(7, 5)
    reg.update(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert reg.xtx.dtype == torch.float64
    ref = Ridge(alpha=reg.penalty(1e-3), solver="cholesky").fit(x.astype(np.float32).astype(np.float64), y)
    np.testing.assert_allclose(reg.solve(1e-3)[0].numpy(), ref.coef_, atol=1e-5)


def test_affine_input_equals_accumulating_transformed_inputs():
    x, y = _data()
    shift, scale = x.mean(0), x.std(0) + 0.1
    direct = _fit((x - shift) / scale, y)
    derived = _fit(x, y, batch=64).affine_input(torch.from_numpy(shift), torch.from_numpy(scale))
    for name in RidgeRegression._STATES:
        np.testing.assert_allclose(getattr(derived, name).numpy(), getattr(direct, name).numpy(), atol=1e-8)


def test_r2_matches_sklearn():
    x, y = _data()
    reg = _fit(x, y)
    weight, bias = reg.solve(0.3)
    pred = x @ weight.numpy().T + bias.numpy()
    assert reg.r2(weight, bias) == pytest.approx(r2_score(y, pred), abs=1e-10)


def test_reduced_rank_projects_fitted_values_on_top_principal_directions():
    x, y = _data(k=6)
    reg = _fit(x, y)
    down, up, bias = reg.solve_reduced_rank(1e-3, rank=2)
    assert down.shape == (2, 7) and up.shape == (6, 2)
    weight, b = reg.solve(1e-3)
    fitted = x @ weight.numpy().T + b.numpy()
    centre = fitted.mean(0)
    _, _, vt = np.linalg.svd(fitted - centre, full_matrices=False)
    proj = vt[:2].T @ vt[:2]
    expected = (fitted - centre) @ proj + centre
    np.testing.assert_allclose(x @ (up @ down).numpy().T + bias.numpy(), expected, atol=1e-8)


def test_reduced_rank_beats_truncated_svd_and_full_rank_is_the_ridge_solution():
    x, y = _data(k=6)
    reg = _fit(x, y)
    down, up, bias = reg.solve_reduced_rank(0.0, rank=2)
    mse_rrr = np.mean((y - x @ (up @ down).numpy().T - bias.numpy()) ** 2)
    weight, b = reg.solve(0.0)
    u, s, vt = np.linalg.svd(weight.numpy())
    w2 = u[:, :2] * s[:2] @ vt[:2]
    b2 = y.mean(0) - w2 @ x.mean(0)
    mse_svd = np.mean((y - x @ w2.T - b2) ** 2)
    assert mse_rrr < mse_svd
    down, up, bias = reg.solve_reduced_rank(0.0, rank=6)  # rank == min(D, K): the full solution
    np.testing.assert_allclose((up @ down).numpy(), weight.numpy(), atol=1e-8)
    np.testing.assert_allclose(bias.numpy(), b.numpy(), atol=1e-8)


def test_errors():
    reg = RidgeRegression(3, 2)
    with pytest.raises(ValueError, match="no samples"):
        reg.solve()
    with pytest.raises(ValueError, match="3 input and 2 output"):
        reg.update(torch.zeros(4, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="same n"):
        reg.update(torch.zeros(4, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="different feature sizes"):
        reg.merge(RidgeRegression(3, 4))
    reg.update(torch.randn(10, 3), torch.randn(10, 2))
    with pytest.raises(ValueError, match="rank must be"):
        reg.solve_reduced_rank(1e-3, rank=3)
