"""Representational alignment metrics: pure functions in ``functional``, streaming ``Metric`` classes here.

>>> from stitching.metrics import get_metric, list_metrics
>>> info = get_metric("mutual_knn")  # info(x, y, topk=10) -> float
>>> info.higher_is_better, info.chance_level(n=1000, topk=10)
(True, 0.01001001001001001)
"""

from stitching.metrics import functional
from stitching.metrics._registry import MetricInfo, get_metric, list_metrics, register_metric
from stitching.metrics.cka import DebiasedCKA, LinearCKA
from stitching.metrics.functional import reduce_activation
from stitching.metrics.knn import CKNNA, MutualKNN

__all__ = [
    "CKNNA",
    "DebiasedCKA",
    "LinearCKA",
    "MetricInfo",
    "MutualKNN",
    "functional",
    "get_metric",
    "list_metrics",
    "reduce_activation",
    "register_metric",
]
