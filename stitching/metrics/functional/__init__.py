"""Pure alignment metrics on (N, D) activations: exact, float64, no eps terms.

Reduce feature maps / tokens first with :func:`reduce_activation`.
"""

from stitching.metrics.functional.cca import canonical_correlations, svcca
from stitching.metrics.functional.cka import debiased_cka, linear_cka
from stitching.metrics.functional.knn import cknna, mutual_knn, nearest_neighbours
from stitching.metrics.functional.procrustes import procrustes, procrustes_distance
from stitching.metrics.functional.reduction import REDUCTION_RULES, reduce_activation
from stitching.metrics.functional.ridge import ridge_r2

__all__ = [
    "REDUCTION_RULES",
    "canonical_correlations",
    "cknna",
    "debiased_cka",
    "linear_cka",
    "mutual_knn",
    "nearest_neighbours",
    "procrustes",
    "procrustes_distance",
    "reduce_activation",
    "ridge_r2",
    "svcca",
]
