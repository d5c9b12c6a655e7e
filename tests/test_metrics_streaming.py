"""Streaming Metric classes: class == functional == NumPy reference, for any batching or process merge."""

import numpy as np
import pytest
from metric_references import np_hsic_unbiased, np_linear_cka, paired

from stitching.metrics import CKNNA, DebiasedCKA, LinearCKA, MutualKNN
from stitching.metrics import functional as F

BATCH_SIZES = [37, 100, 1, 62]  # uneven on purpose, including a batch of one


def batches(x, y, sizes=BATCH_SIZES):
    start = 0
    for size in sizes:
        yield x[start : start + size], y[start : start + size]
        start += size
    assert start == x.shape[0]


def test_linear_cka_class_equals_functional_and_reference_for_any_batching():
    x, y = paired(200, 12, 20)
    metric = LinearCKA(12, 20)
    for bx, by in batches(x, y):
        metric.update(bx, by)
    single = LinearCKA(12, 20)
    single.update(x, y)
    expected = np_linear_cka(x.numpy(), y.numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    assert float(single.compute()) == pytest.approx(float(F.linear_cka(x, y)), rel=1e-12)
    assert float(metric.compute()) == pytest.approx(float(single.compute()), rel=1e-12)


def test_linear_cka_merge_equals_single_process():
    # merge_state applies each state's dist_reduce_fx, as a DDP sync would.
    x, y = paired(200, 12, 20)
    a, b = LinearCKA(12, 20), LinearCKA(12, 20)
    a.update(x[:90].float(), y[:90].float())
    b.update(x[90:].float(), y[90:].float())
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(float(F.linear_cka(x.float(), y.float())), rel=1e-12)


def test_linear_cka_reset_and_errors():
    x, y = paired(50, 4, 6)
    metric = LinearCKA(4, 6)
    with pytest.raises(ValueError, match="built for Dx=4, Dy=6"):
        metric.update(x, x)
    metric.update(x, y)
    metric.reset()
    with pytest.raises(ValueError, match="at least 2 samples"), pytest.warns(UserWarning, match="before"):
        metric.compute()


def test_debiased_cka_one_batch_equals_functional():
    x, y = paired(120, 10, 14)
    metric = DebiasedCKA()
    metric.update(x, y)
    assert float(metric.compute()) == pytest.approx(float(F.debiased_cka(x, y)), rel=1e-12)


def test_debiased_cka_minibatch_equals_reference_average():
    x, y = paired(200, 10, 14)
    sizes = [50, 50, 50, 50]
    metric = DebiasedCKA()
    sums = np.zeros(3)
    for bx, by in batches(x, y, sizes):
        metric.update(bx, by)
        k, l_ = bx.numpy() @ bx.numpy().T, by.numpy() @ by.numpy().T
        sums += [np_hsic_unbiased(k, l_), np_hsic_unbiased(k, k), np_hsic_unbiased(l_, l_)]
    expected = sums[0] / np.sqrt(sums[1] * sums[2])  # Nguyen et al. 2021: average HSICs, then the ratio
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    # An unbiased estimate of the same quantity as the full-batch value, so close to it.
    assert float(metric.compute()) == pytest.approx(float(F.debiased_cka(x, y)), abs=0.05)


def test_debiased_cka_rejects_small_batches():
    x, y = paired(3, 4, 4)
    with pytest.raises(ValueError, match="at least 4 samples"):
        DebiasedCKA().update(x, y)


@pytest.mark.parametrize(("cls", "fn"), [(MutualKNN, F.mutual_knn), (CKNNA, F.cknna)])
def test_knn_classes_equal_functional_on_the_stored_subsample(cls, fn):
    x, y = paired(200, 12, 20)
    metric = cls(topk=5, max_samples=150, block_size=16)
    for bx, by in batches(x, y):
        metric.update(bx, by)
    assert float(metric.compute()) == pytest.approx(float(fn(x[:150], y[:150], topk=5)), rel=1e-12)

    a, b = cls(topk=5), cls(topk=5)
    a.update(x[:80], y[:80])
    b.update(x[80:], y[80:])
    a.merge_state(b)  # "cat" across processes
    assert float(a.compute()) == pytest.approx(float(fn(x, y, topk=5)), rel=1e-12)


def test_knn_class_without_samples_errors():
    with pytest.raises(ValueError, match="no samples"), pytest.warns(UserWarning, match="before"):
        MutualKNN().compute()


def test_metric_directions_declared():
    assert all(c.higher_is_better for c in (LinearCKA, DebiasedCKA, MutualKNN, CKNNA))
