"""Degenerate activations (dead layers, NaN/inf, all ties): a clear error from every metric, not a number."""

import math

import pytest
import torch

from stitching.metrics import (
    CKNNA,
    DebiasedCKA,
    DegenerateActivationError,
    LinearCKA,
    MutualKNN,
    get_metric,
    list_metrics,
)
from stitching.metrics import functional as F

N, D = 24, 5
KWARGS = {"mutual_knn": {"topk": 3}, "cknna": {"topk": 3}}


def degenerate(case, dtype):
    g = torch.Generator().manual_seed(1)
    if case == "constant":  # 0.1 is not exact in binary: centring leaves rounding residue in float64
        return torch.full((N, D), 0.1, dtype=dtype)
    if case == "zeros":
        return torch.zeros(N, D, dtype=dtype)
    if case == "identical rows":
        return torch.randn(1, D, generator=g, dtype=dtype).expand(N, D).clone()
    t = torch.randn(N, D, generator=g, dtype=dtype)
    t[3, 2] = float("nan") if case == "nan" else float("inf")
    return t


CASES = ["constant", "zeros", "identical rows", "nan", "inf"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list_metrics())
def test_every_metric_rejects_every_degenerate_input_on_either_side(name, dtype):
    good = torch.randn(N, D, dtype=dtype)
    info = get_metric(name)
    for case in CASES:
        bad = degenerate(case, dtype)
        for side, (x, y) in (("x", (bad, good)), ("y", (good, bad))):
            with pytest.raises(DegenerateActivationError, match=rf"{name.split('_distance')[0]}.*: {side} "):
                info(x, y, **KWARGS.get(name, {}))


@pytest.mark.parametrize("case", CASES)
def test_streaming_metrics_reject_degenerate_inputs(case):
    good, bad = torch.randn(N, D, dtype=torch.float64), degenerate(case, torch.float64)
    for metric in (LinearCKA(D), DebiasedCKA(), MutualKNN(topk=3), CKNNA(topk=3)):
        with pytest.raises(DegenerateActivationError):
            metric.update(good, bad)
            metric.compute()


def test_a_degenerate_error_is_a_value_error():
    with pytest.raises(ValueError, match="constant across samples"):
        F.linear_cka(torch.randn(N, D), torch.ones(N, D))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_real_variation_is_not_mistaken_for_a_constant(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (1e3 + 1e-3 * torch.randn(N, D, generator=g, dtype=torch.float64)).to(dtype)  # relative 1e-6
    for name in list_metrics():
        assert math.isfinite(get_metric(name)(x, y, **KWARGS.get(name, {})))
    metric = LinearCKA(D)
    metric.update(x, y)
    assert math.isfinite(float(metric.compute()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_procrustes_distance_of_a_shape_with_itself_is_zero(dtype):
    x = torch.randn(200, 16, dtype=dtype)
    q = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64)).Q.to(dtype)
    assert float(F.procrustes_distance(x, x)) == 0.0
    assert float(F.procrustes_distance(x, 3 * x @ q + 1)) == 0.0
    assert float(F.procrustes_distance(x, torch.randn(200, 16, dtype=dtype))) > 0.5


def test_ridge_r2_with_a_constant_held_out_target_raises():
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    with pytest.raises(DegenerateActivationError, match="y_test is constant"):
        F.ridge_r2(x, y, x_test=torch.randn(10, 4), y_test=torch.full((10, 3), 0.1, dtype=torch.float64))
    with pytest.raises(DegenerateActivationError, match=r"ridge_r2.*: y is constant"):
        F.ridge_r2(x, torch.full((50, 3), 0.1, dtype=torch.float64))


def test_cknna_with_a_non_positive_self_hsic_says_so():
    g = torch.Generator().manual_seed(130)  # found by search: N=4, topk=2 gives a negative self-term
    x, y = (
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
    )
    with pytest.warns(UserWarning, match="cknna: the unbiased HSIC .* not positive"):
        assert math.isnan(float(F.cknna(x, y, topk=2)))
