"""Name -> metric lookup with direction, chance level, best value and permutation fast path."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stitching._utils import did_you_mean
from stitching.metrics import functional as F
from stitching.metrics.functional import _permuted as P


@dataclass(frozen=True)
class MetricInfo:
    """One registered alignment metric."""

    name: str
    """Registry key, also the key in cell records."""
    fn: Callable[..., Tensor]
    """The functional form, ``fn(x, y, **kwargs) -> 0-d float64 tensor``."""
    higher_is_better: bool
    """Direction, as in torchmetrics' ``Metric.higher_is_better``."""
    chance: Callable[..., float] | None = None
    """``chance(n, **kwargs)``: expected value for independent inputs of N samples; None if none exists."""
    best: float | None = None
    """Best attainable value (1 for similarities, 0 for distances): the calibrated score's ``s_max``; None if
    unbounded (the calibrated score is then the raw excess over the null threshold)."""
    null: Callable[..., P.NullScorer] | None = None
    """Permutation fast path: ``null(x, y, **kwargs)`` returns ``score(perms)``, the metric of
    ``(x, y[perm])`` for each row of a ``(B, N)`` permutation batch, reusing per-side work. None: the
    generic path calls ``fn`` once per permutation (slower)."""

    def __call__(self, x: Tensor, y: Tensor, **kwargs) -> float:
        return float(self.fn(x, y, **kwargs))

    def null_scorer(self, x: Tensor, y: Tensor, fast: bool = True, **kwargs) -> P.NullScorer:
        """``score(perms)`` for permutation tests: the fast path if any (and ``fast``), else generic."""
        if fast and self.null is not None:
            return self.null(x, y, **kwargs)

        def generic(perms: Tensor) -> Tensor:
            with warnings.catch_warnings():  # the observed call has already warned (e.g. N <= D)
                warnings.simplefilter("ignore")
                values = [float(self.fn(x, y[p], **kwargs)) for p in perms]
            return torch.tensor(values, dtype=torch.float64)

        return generic

    def chance_level(self, n: int, **kwargs) -> float | None:
        """Chance level for N samples under the same kwargs as the call (e.g. ``topk``), or None."""
        return None if self.chance is None else self.chance(n, **kwargs)


def _knn_chance(n: int, topk: int = inspect.signature(F.mutual_knn).parameters["topk"].default, **_) -> float:
    # Independent k-NN graphs: each of the k neighbours of i in y is in x's list w.p. k / (N - 1).
    return topk / (n - 1)


_METRICS: dict[str, MetricInfo] = {}


def register_metric(info: MetricInfo) -> MetricInfo:
    """Add a metric to the registry; a name collision is an error, not a silent overwrite."""
    if info.name in _METRICS:
        raise ValueError(f"metric {info.name!r} is already registered")
    _METRICS[info.name] = info
    return info


for _info in (
    MetricInfo("linear_cka", F.linear_cka, True, best=1.0, null=P.linear_cka_null),
    MetricInfo("debiased_cka", F.debiased_cka, True, lambda n, **_: 0.0, 1.0, P.debiased_cka_null),
    MetricInfo("mutual_knn", F.mutual_knn, True, _knn_chance, 1.0, P.mutual_knn_null),
    MetricInfo("cknna", F.cknna, True, best=1.0, null=P.cknna_null),
    MetricInfo("procrustes", F.procrustes, True, best=1.0, null=P.procrustes_null),
    MetricInfo(
        "procrustes_distance", F.procrustes_distance, False, best=0.0, null=P.procrustes_distance_null
    ),
    MetricInfo("svcca", F.svcca, True, best=1.0, null=P.svcca_null),
    MetricInfo("ridge_r2", F.ridge_r2, True, best=1.0),
):
    register_metric(_info)


def list_metrics() -> list[str]:
    """Names of all registered alignment metrics, sorted."""
    return sorted(_METRICS)


def get_metric(name: str) -> MetricInfo:
    """Look a metric up by name; unknown names fail with the closest matches."""
    if name not in _METRICS:
        hint = did_you_mean(name, _METRICS, cutoff=0.5)
        raise ValueError(f"unknown metric {name!r}; {hint}available: {', '.join(list_metrics())}")
    return _METRICS[name]
