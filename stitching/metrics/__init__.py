"""Representational alignment metrics: pure functions in ``functional``, streaming ``Metric`` classes here.

>>> from stitching.metrics import get_metric, list_metrics
>>> info = get_metric("mutual_knn")  # info(x, y, topk=10) -> float
>>> info.higher_is_better, info.chance_level(n=1000, topk=10)
(True, 0.01001001001001001)

Calibrated alignment (Groger, Wen & Brbic 2026): :func:`permutation_test` compares a score with K
permutations of y's rows and returns the null's mean and 95th percentile, an add-one p-value and the
reference's calibrated score ``clamp((s - tau) / (best - tau), 0, 1)``; :func:`permutation_test_max`
calibrates the best of several layer pairs against the null of the best (see ``permutation``'s docstring).

>>> from stitching.metrics import permutation_test
>>> result = permutation_test("linear_cka", x, y, n_permutations=1000, seed=0)  # doctest: +SKIP
>>> result.p_value, result.null95, result.calibrated  # doctest: +SKIP
"""

from stitching.metrics import functional
from stitching.metrics._registry import MetricInfo, get_metric, list_metrics, register_metric
from stitching.metrics.cka import DebiasedCKA, LinearCKA
from stitching.metrics.functional import DegenerateActivationError, reduce_activation
from stitching.metrics.knn import CKNNA, MutualKNN
from stitching.metrics.permutation import (
    MaxPermutationResult,
    PermutationResult,
    permutation_test,
    permutation_test_max,
)

__all__ = [
    "CKNNA",
    "DebiasedCKA",
    "DegenerateActivationError",
    "LinearCKA",
    "MaxPermutationResult",
    "MetricInfo",
    "MutualKNN",
    "PermutationResult",
    "functional",
    "get_metric",
    "list_metrics",
    "permutation_test",
    "permutation_test_max",
    "reduce_activation",
    "register_metric",
]
