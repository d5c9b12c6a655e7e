"""Pure alignment metrics on (N, D) activations: exact, float64, no eps terms.

Reduce feature maps / tokens first with :func:`reduce_activation`. Degenerate inputs (NaN/inf, constant
across samples up to a relative 1e-12, or for k-NN metrics rows that all point the same way) raise
:class:`DegenerateActivationError`, a ``ValueError``.
"""

from stitching.metrics.functional._checks import DegenerateActivationError
from stitching.metrics.functional.cca import canonical_correlations, svcca
from stitching.metrics.functional.cka import debiased_cka, linear_cka
from stitching.metrics.functional.knn import cknna, mutual_knn, nearest_neighbours
from stitching.metrics.functional.procrustes import procrustes, procrustes_distance
from stitching.metrics.functional.reduction import REDUCTION_RULES, reduce_activation
from stitching.metrics.functional.ridge import ridge_r2

__all__ = [
    "REDUCTION_RULES",
    "DegenerateActivationError",
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
