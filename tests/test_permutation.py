"""Permutation calibration: agreement with the authors' package, behaviour under the null, fast paths."""

import math

import pytest
import torch

from stitching.metrics import (
    MetricInfo,
    get_metric,
    list_metrics,
    permutation_test,
    permutation_test_max,
)
from stitching.metrics import functional as F


def reference():
    """The authors' package (``calibrated-similarity``, dev extra); only these comparisons skip without it."""
    return pytest.importorskip("calibrated_similarity")


KNN = {"mutual_knn": {"topk": 5}, "cknna": {"topk": 5}}


def pair(n, d, strength, seed):
    """x and y = strength * (x W) + noise: independent for strength 0, tightly related for large strength."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = strength * x @ torch.randn(d, d + 2, generator=g, dtype=torch.float64)
    return x, y + torch.randn(n, d + 2, generator=g, dtype=torch.float64)


def our_permutations(n, seed):
    """perm_fn for the reference that replays the permutations permutation_test draws for this seed."""
    g = torch.Generator().manual_seed(seed)
    return lambda n_, device: torch.randperm(n_, generator=g).to(device)


def cka(x, y):
    return F.linear_cka(x, y)


@pytest.mark.parametrize("strength", [0.0, 0.08, 1.0])
def test_same_permutations_reproduce_the_reference_exactly(strength):
    x, y = pair(40, 6, strength, seed=3)
    ours = permutation_test("linear_cka", x, y, n_permutations=200, seed=7)
    cal, p, tau = reference().calibrate(x, y, cka, K=200, perm_fn=our_permutations(40, 7))
    assert ours.p_value == pytest.approx(float(p), abs=1e-6)
    assert ours.threshold == pytest.approx(float(tau), rel=1e-5)  # the reference works in float32
    assert ours.calibrated == pytest.approx(float(cal), abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_p_values_and_quantiles_agree_with_the_reference_within_monte_carlo_error(seed):
    k = 500
    x, y = pair(30, 5, [0.0, 0.06, 0.1, 0.15][seed], seed)
    ours = permutation_test("linear_cka", x, y, n_permutations=k, seed=seed)
    gen = torch.Generator().manual_seed(1000 + seed)  # independent permutations
    _, p_ref, tau_ref = reference().calibrate(x, y, cka, K=k, generator=gen)
    p = 0.5 * (ours.p_value + float(p_ref))
    se = math.sqrt(2 * p * (1 - p) / k)  # difference of two independent estimates
    assert abs(ours.p_value - float(p_ref)) <= 3 * se + 2 / k
    # The reference's threshold is a 95% quantile of its own null: ours exceeds it about 5% of the time.
    above = float((ours.null >= float(tau_ref)).double().mean())
    assert abs(above - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / k) + 3 * math.sqrt(0.05 * 0.95 / k)


def test_best_pair_reproduces_calibrate_layers_with_the_same_permutations():
    xs = [pair(30, 4, 0.1, s)[0] for s in range(3)]
    ys = [pair(30, 4, 0.1, s)[1] for s in (0, 5)]
    ours = permutation_test_max("linear_cka", xs, ys, n_permutations=100, seed=2)
    cal, p, tau = reference().calibrate_layers(xs, ys, cka, agg="max", K=100, perm_fn=our_permutations(30, 2))
    assert ours.p_value == pytest.approx(float(p), abs=1e-6)
    assert ours.threshold == pytest.approx(float(tau), rel=1e-5)
    assert ours.calibrated == pytest.approx(float(cal), abs=1e-5)
    assert ours.score == pytest.approx(float(ours.scores.max()))
    assert ours.scores.shape == (3, 2) and ours.scores[ours.best_pair] == ours.scores.max()


@pytest.mark.parametrize("name", ["linear_cka", "mutual_knn"])
def test_p_values_are_uniform_on_independent_data(name):
    ps = torch.tensor(
        [
            permutation_test(
                name, *pair(24, 4, 0.0, 100 + i), n_permutations=99, seed=i, metric_kwargs=KNN.get(name)
            ).p_value
            for i in range(100)
        ],
        dtype=torch.float64,
    )
    # P(p <= 0.05) = 5/100 exactly for a valid add-one test: Binomial(100, 0.05) is <= 12 w.p. 0.999.
    assert int((ps <= 0.05).sum()) <= 12
    assert abs(float(ps.mean()) - 0.505) < 3 * 0.029  # uniform on {1/100, ..., 1}: sd of the mean ~0.029
    assert float(ps.min()) >= 1 / 100


@pytest.mark.parametrize("name", list_metrics())
def test_p_value_is_at_its_floor_on_dependent_data(name):
    x, y = pair(40, 4, 3.0, seed=1)
    result = permutation_test(name, x, y, n_permutations=49, seed=0, metric_kwargs=KNN.get(name))
    assert result.p_value == 1 / 50
    info = get_metric(name)
    beyond = result.score > result.null95 if info.higher_is_better else result.score < result.null95
    assert beyond and 0 < result.calibrated <= 1
    assert result.null.shape == (49,) and result.n_permutations == 49 and result.seed == 0


def test_lower_is_better_metric_is_tested_in_its_own_direction():
    x, y = pair(40, 4, 3.0, seed=1)
    dist = permutation_test("procrustes_distance", x, y, n_permutations=49)
    sim = permutation_test("procrustes", x, y, n_permutations=49)
    assert dist.score == pytest.approx(math.acos(sim.score))
    assert dist.null95 == pytest.approx(math.acos(sim.null95)) and dist.null95 > dist.score
    # Distance calibrated as (tau - d) / (tau - 0):
    assert dist.calibrated == pytest.approx((dist.threshold - dist.score) / dist.threshold)


FAST = [name for name in list_metrics() if get_metric(name).null is not None]


@pytest.mark.filterwarnings("ignore:svcca. N=20 samples")  # the wide case is meant to be N < D
@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize(("n", "dx", "strength"), [(50, 6, 0.3), (20, 100, 0.3), (12, 3, 0.0)])
def test_fast_paths_equal_the_generic_path_for_the_same_permutations(name, n, dx, strength):
    x, y = pair(n, dx, strength, seed=n)
    kwargs = KNN.get(name, {})
    perms = torch.stack([torch.randperm(n) for _ in range(9)])
    info = get_metric(name)
    fast = info.null_scorer(x, y, **kwargs)(perms)
    slow = info.null_scorer(x, y, fast=False, **kwargs)(perms)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    a = permutation_test(name, x, y, n_permutations=30, metric_kwargs=kwargs)
    b = permutation_test(name, x, y, n_permutations=30, metric_kwargs=kwargs, fast=False)
    torch.testing.assert_close(a.null, b.null, rtol=1e-9, atol=1e-12)
    assert a.p_value == b.p_value


def test_best_pair_is_inflated_raw_but_not_calibrated_on_independent_data():
    k, calibrated, inflation = 99, [], []
    for seed in range(8):
        xs = [pair(30, 20, 0.0, 10 * seed + i)[0] for i in range(3)]
        ys = [pair(30, 20, 0.0, 10 * seed + i + 5)[1] for i in range(3)]
        best = permutation_test_max("linear_cka", xs, ys, n_permutations=k, seed=seed)
        i, j = best.best_pair
        single = permutation_test("linear_cka", xs[i], ys[j], n_permutations=k, seed=seed)
        assert best.score == single.score
        assert best.p_value >= single.p_value  # the same permutations: the max null dominates the pair's
        assert best.null95 >= single.null95
        inflation.append(best.score - single.null_mean)
        calibrated.append(best.calibrated)
    assert min(inflation) > 0  # the raw best-of-9 beats the single-pair null's mean every time
    assert sum(c > 0 for c in calibrated) <= 2  # ~5% of independent grids pass the max null's threshold


def test_callable_and_metric_info_metrics():
    x, y = pair(30, 4, 1.0, seed=0)
    by_name = permutation_test("linear_cka", x, y, n_permutations=20)
    by_callable = permutation_test(cka, x, y, n_permutations=20)
    assert by_callable.metric == "cka" and by_callable.p_value == by_name.p_value
    torch.testing.assert_close(by_callable.null, by_name.null)
    negated = MetricInfo("neg", lambda a, b: -F.linear_cka(a, b), False, best=-1.0)
    flipped = permutation_test(negated, x, y, n_permutations=20)
    assert flipped.p_value == by_name.p_value and flipped.calibrated == pytest.approx(by_name.calibrated)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda x, y: permutation_test("linear_cka", x, y, n_permutations=0),
            "n_permutations must be an int",
        ),
        (lambda x, y: permutation_test("linear_cka", x, y, n_permutations=1.5), "pass e.g. n_permutations"),
        (lambda x, y: permutation_test("linear_cka", x, y[:-1]), "same samples in the same order"),
        (lambda x, y: permutation_test_max("linear_cka", [x], [y, y[:-2]]), "same samples in the same order"),
        (lambda x, y: permutation_test_max("linear_cka", [], [y]), "at least one x"),
        (lambda x, y: permutation_test("linear_ckaa", x, y), "unknown metric 'linear_ckaa'.*linear_cka"),
        (lambda x, y: permutation_test(3, x, y), "registered name"),
        (lambda x, y: permutation_test("linear_cka", x, y, alpha=1.0), "alpha must be in"),
        (lambda x, y: permutation_test(lambda a, b: float("nan"), x, y), "NaN or inf"),
    ],
)
def test_bad_input_fails_with_a_clear_error(call, match):
    x, y = pair(20, 3, 0.0, seed=0)
    with pytest.raises(ValueError, match=match):
        call(x, y)
