"""Functional alignment metrics against independent NumPy/SciPy/sklearn references, invariances and errors."""

import math
import warnings
from functools import partial

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from metric_references import (
    np_debiased_cka,
    np_linear_cka,
    np_mutual_knn,
    np_procrustes,
    np_ridge_r2,
    np_svcca,
    paired,
)
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from stitching.metrics import MetricInfo, get_metric, list_metrics
from stitching.metrics import functional as F


def orthogonal(d, seed):
    return torch.from_numpy(scipy.stats.ortho_group.rvs(d, random_state=seed))


REFERENCE_CASES = [
    # (id, ours(x, y), reference(x, y), n, dx, dy)
    ("linear_cka-feature", partial(F.linear_cka, form="feature"), np_linear_cka, 200, 12, 20),
    ("linear_cka-gram", partial(F.linear_cka, form="gram"), np_linear_cka, 60, 12, 80),
    ("linear_cka-auto", F.linear_cka, np_linear_cka, 60, 90, 7),
    ("debiased_cka-feature", partial(F.debiased_cka, form="feature"), np_debiased_cka, 200, 12, 20),
    ("debiased_cka-gram", partial(F.debiased_cka, form="gram"), np_debiased_cka, 60, 12, 80),
    ("procrustes-tall", F.procrustes, np_procrustes, 200, 12, 20),
    ("procrustes-wide", F.procrustes, np_procrustes, 30, 50, 40),
    ("procrustes-mixed", F.procrustes, np_procrustes, 30, 10, 40),
    ("svcca-0.99", F.svcca, partial(np_svcca, keep=0.99), 300, 12, 20),
    ("svcca-int", partial(F.svcca, keep=5), partial(np_svcca, keep=5), 300, 12, 20),
    ("svcca-0.5", partial(F.svcca, keep=0.5), partial(np_svcca, keep=0.5), 300, 12, 20),
    ("ridge_r2-primal", F.ridge_r2, partial(np_ridge_r2, alpha=1e-3), 200, 12, 20),
    ("ridge_r2-strong", partial(F.ridge_r2, alpha=0.5), partial(np_ridge_r2, alpha=0.5), 200, 12, 5),
    ("mutual_knn", F.mutual_knn, partial(np_mutual_knn, topk=10), 300, 12, 20),
    ("mutual_knn-k3", partial(F.mutual_knn, topk=3), partial(np_mutual_knn, topk=3), 100, 5, 8),
]


@pytest.mark.parametrize(
    ("ours", "reference", "n", "dx", "dy"),
    [case[1:] for case in REFERENCE_CASES],
    ids=[case[0] for case in REFERENCE_CASES],
)
def test_matches_numpy_reference(ours, reference, n, dx, dy):
    x, y = paired(n, dx, dy)
    expected = reference(x.numpy(), y.numpy())
    value = ours(x, y)
    assert value.dtype == torch.float64 and value.ndim == 0
    assert float(value) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_procrustes_distance_is_arccos_of_similarity():
    x, y = paired(100, 8, 8)
    assert float(F.procrustes_distance(x, y)) == pytest.approx(math.acos(np_procrustes(x.numpy(), y.numpy())))


def test_ridge_r2_on_held_out_pair_matches_sklearn():
    x, y = paired(300, 12, 6)
    fit, test = slice(0, 200), slice(200, 300)
    lam = 1e-2 * np.sum((x[fit].numpy() - x[fit].numpy().mean(0)) ** 2) / 12
    model = Ridge(alpha=lam).fit(x[fit].numpy(), y[fit].numpy())
    expected = r2_score(y[test].numpy(), model.predict(x[test].numpy()), multioutput="variance_weighted")
    value = F.ridge_r2(x[fit], y[fit], alpha=1e-2, x_test=x[test], y_test=y[test])
    assert float(value) == pytest.approx(expected, rel=1e-9)


def test_ridge_r2_dual_form_matches_primal_when_underdetermined():
    x, y = paired(40, 60, 5)
    with pytest.warns(UserWarning, match="N=40 samples <= D=60"):
        value = F.ridge_r2(x, y, alpha=0.1)
    assert float(value) == pytest.approx(np_ridge_r2(x.numpy(), y.numpy(), 0.1), rel=1e-9)


# ---------------------------------------------------------------- properties over the whole registry

# Which metrics are invariant to a translation of one side (k-NN metrics use uncentred cosine similarity).
TRANSLATION_INVARIANT = {
    "linear_cka",
    "debiased_cka",
    "procrustes",
    "procrustes_distance",
    "svcca",
    "ridge_r2",
}
CALL_KWARGS = {"ridge_r2": {"alpha": 0.0}, "svcca": {"keep": None}}  # exact identity / full invariance


def call(name, x, y):
    return get_metric(name)(x, y, **CALL_KWARGS.get(name, {}))


@pytest.mark.parametrize("name", list_metrics())
def test_identical_inputs_give_perfect_score(name):
    x, _ = paired(150, 10, 10)
    perfect = 1.0 if get_metric(name).higher_is_better else 0.0
    assert call(name, x, x) == pytest.approx(perfect, abs=1e-7)


@pytest.mark.parametrize("name", list_metrics())
def test_invariances(name):
    x, y = paired(150, 10, 14, seed=1, noise=1.0)
    base = call(name, x, y)
    perm = torch.randperm(x.shape[0])
    transforms = {
        "orthogonal": (x @ orthogonal(10, 0), y @ orthogonal(14, 1)),
        "scaling": (x * 7.5, y * 0.02),
        "permutation": (x[perm], y[perm]),
    }
    if name in TRANSLATION_INVARIANT:
        transforms["translation"] = (x + 11.0, y - torch.linspace(0, 5, 14, dtype=torch.float64))
    for kind, (tx, ty) in transforms.items():
        assert call(name, tx, ty) == pytest.approx(base, rel=1e-7, abs=1e-9), kind


def test_knn_metrics_are_not_translation_invariant():
    # A documented property of the reference convention (cosine neighbours without centring).
    x, y = paired(150, 10, 14, seed=1, noise=1.0)
    assert float(F.mutual_knn(x, y)) != float(F.mutual_knn(x + 5.0, y))


def test_independent_data_gives_chance():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1000, 40, generator=gen, dtype=torch.float64)
    y = torch.randn(1000, 30, generator=gen, dtype=torch.float64)
    # Debiased CKA: standard deviation about sqrt(2)/N = 0.0014 for isotropic data; biased CKA is not ~0.
    assert abs(float(F.debiased_cka(x, y))) < 0.007
    assert float(F.linear_cka(x, y)) > 0.02
    # Mutual k-NN: chance k/(N-1) = 0.01, standard deviation about sqrt(k/N)/k = 0.001.
    chance = get_metric("mutual_knn").chance_level(1000, topk=10)
    assert chance == pytest.approx(10 / 999)
    assert float(F.mutual_knn(x, y, topk=10)) == pytest.approx(chance, abs=0.005)
    assert get_metric("debiased_cka").chance_level(1000) == 0.0


def test_linear_cka_forms_agree_and_auto_avoids_gram_for_tall_data():
    x, y = paired(400, 16, 24)
    assert float(F.linear_cka(x, y, form="gram")) == pytest.approx(float(F.linear_cka(x, y, form="feature")))
    assert float(F.debiased_cka(x, y, form="gram")) == pytest.approx(float(F.debiased_cka(x, y)))


@pytest.mark.parametrize("metric", [F.mutual_knn, F.cknna])
def test_knn_blockwise_equals_single_block(metric):
    x, y = paired(203, 9, 13)
    # mutual k-NN counts neighbours (exact); CKNNA sums kernel values, in another order per block size.
    tolerance = 0 if metric is F.mutual_knn else 1e-12
    assert float(metric(x, y, block_size=7)) == pytest.approx(
        float(metric(x, y, block_size=203)), rel=tolerance
    )


def test_nearest_neighbours_exclude_self_and_sort():
    x, _ = paired(50, 6, 6)
    values, indices = F.nearest_neighbours(x, topk=5, block_size=8)
    assert not (indices == torch.arange(50).unsqueeze(1)).any()
    assert (values[:, :-1] >= values[:, 1:]).all()


def test_float32_inputs_are_computed_in_float64():
    x, y = paired(120, 10, 10)
    assert float(F.linear_cka(x.float(), y.float())) == pytest.approx(float(F.linear_cka(x, y)), rel=1e-6)
    assert F.debiased_cka(x.float(), y.float()).dtype == torch.float64


# ---------------------------------------------------------------- errors and warnings


def test_too_few_samples_errors():
    x, y = paired(3, 4, 4)
    with pytest.raises(ValueError, match="debiased_cka needs at least 4 samples"):
        F.debiased_cka(x, y)
    with pytest.raises(ValueError, match="needs N >= topk"):
        F.mutual_knn(x, y, topk=3)
    with pytest.raises(ValueError, match="topk must be an int >= 2"):
        F.cknna(*paired(10, 4, 4), topk=1)


def test_shape_errors_name_the_fix():
    x, y = paired(20, 4, 4)
    with pytest.raises(ValueError, match="reduce_activation"):
        F.linear_cka(x.reshape(20, 2, 2), y)
    with pytest.raises(ValueError, match="same samples"):
        F.procrustes(x, y[:10])
    with pytest.raises(ValueError, match="NaN or inf"):
        F.linear_cka(x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="constant across samples"):
        F.linear_cka(torch.ones(20, 4), y)


def test_cca_type_metrics_warn_when_underdetermined():
    x, y = paired(20, 30, 8)
    with pytest.warns(UserWarning, match="N=20 samples <= D=30"):
        F.svcca(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.svcca(*paired(100, 30, 8))


def test_svcca_keep_validation():
    x, y = paired(100, 6, 6)
    with pytest.raises(ValueError, match="rank 6"):
        F.svcca(x, y, keep=7)
    with pytest.raises(ValueError, match="keep must be"):
        F.svcca(x, y, keep=0)
    assert float(F.svcca(x, y, keep=1.0)) == pytest.approx(float(F.svcca(x, y, keep=None)))


def test_registry_lookup():
    assert set(list_metrics()) >= {"linear_cka", "debiased_cka", "mutual_knn", "cknna", "procrustes", "svcca"}
    info = get_metric("procrustes_distance")
    assert isinstance(info, MetricInfo) and info.higher_is_better is False and info.chance_level(10) is None
    with pytest.raises(ValueError, match="did you mean mutual_knn"):
        get_metric("mutual_nn")


# ---------------------------------------------------------------- reduce_activation


def test_reduce_feature_map():
    x = torch.randn(4, 3, 2, 5)
    assert F.reduce_activation(x, "flatten").shape == (4, 30)
    torch.testing.assert_close(F.reduce_activation(x, "mean"), x.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="feature map"):
        F.reduce_activation(x, "cls")


def test_reduce_tokens_excludes_prefix_tokens():
    x = torch.randn(4, 1 + 9, 6)
    x[:, 0] = 100.0  # the class token must not leak into mean/flatten
    torch.testing.assert_close(F.reduce_activation(x, "mean", num_prefix_tokens=1), x[:, 1:].mean(1))
    assert F.reduce_activation(x, "flatten", num_prefix_tokens=1).shape == (4, 54)
    torch.testing.assert_close(F.reduce_activation(x, "cls", num_prefix_tokens=1), x[:, 0])
    with pytest.raises(ValueError, match="num_prefix_tokens >= 1"):
        F.reduce_activation(x, "cls")
    with pytest.raises(ValueError, match="unknown reduction rule 'avg'"):
        F.reduce_activation(x, "avg")
    assert F.reduce_activation(x[:, 0], "cls").shape == (4, 6)  # already (N, D): unchanged


@pytest.mark.parametrize("name", list_metrics())
def test_inputs_are_not_modified(name):
    # Metrics centre and normalise float64 copies in place; the caller's tensors must be untouched.
    x, y = paired(60, 5, 7)
    x0, y0 = x.clone(), y.clone()
    call(name, x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
