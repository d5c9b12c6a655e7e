"""Permutation calibration of alignment scores (Groger, Wen & Brbic, ICML 2026, arXiv 2602.14486).

The null is "no correspondence between the rows of x and y": y's rows are permuted K times and the metric is
recomputed. Statistics follow the authors' ``calibrated-similarity`` package (mlbio-epfl/Aristotelian,
``calibrate`` and ``calibrate_layers``), computed in the metric's direction (negated for lower-is-better
metrics such as ``procrustes_distance``, so "more aligned" is always the upper tail):

- ``p_value = (1 + #{null >= score}) / (1 + K)`` (add-one, never 0; floor ``1 / (K + 1)``); null values
  within 1e-12 (relative) of the score are ties and count, so rounding never makes a test look significant;
- ``threshold`` (tau) = the ``ceil((1 - alpha)(K + 1))``-th smallest of the K + 1 values {score} + null;
- ``calibrated = clamp((score - tau) / (best - tau), 0, 1)`` with ``best`` the metric's best attainable value
  (``MetricInfo.best``, the reference's ``s_max``; 1 for similarities): 0 when the score is not above what
  unrelated data reach at level alpha, 1 for a perfect score. Metrics without a best value get
  ``max(0, score - tau)``, as the reference does with ``smax=None``.
- ``null95`` is the ``ceil((1 - alpha) K)``-th smallest null value alone (the 95th percentile for alpha=0.05).

Registered metrics with a fast path (``MetricInfo.null``) reuse per-side work across permutations; the others
(``ridge_r2``, plain callables) call the metric once per permutation, which is much slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from stitching.metrics._registry import MetricInfo, get_metric

_TIE = 1e-12
"""Null values this close to the score (relative) are rounding-level ties and count as reaching it."""

MetricLike = str | MetricInfo | Callable[[Tensor, Tensor], Any]


@dataclass(frozen=True, kw_only=True)
class PermutationResult:
    """A permutation test of one alignment score; values are in the metric's own units and direction."""

    metric: str
    score: float
    """The observed metric value."""
    null_mean: float
    null95: float
    """The (1 - alpha) quantile of the null (the alpha quantile for lower-is-better metrics)."""
    threshold: float
    """tau: the reference's critical value, the same quantile of {score} and the null together."""
    p_value: float
    calibrated: float
    """``clamp((score - tau) / (best - tau), 0, 1)`` in the metric's direction (module docstring)."""
    n_permutations: int
    seed: int
    alpha: float
    null: Tensor = field(repr=False, compare=False)
    """The K null values, float64."""


@dataclass(frozen=True, kw_only=True)
class MaxPermutationResult(PermutationResult):
    """The best layer pair's score calibrated against the null of the best over all pairs."""

    best_pair: tuple[int, int]
    """``(i, j)``: xs[i] and ys[j] score best (``score`` is theirs)."""
    scores: Tensor = field(repr=False, compare=False)
    """``(len(xs), len(ys))`` raw scores of every pair, float64."""


def _resolve(metric: MetricLike) -> MetricInfo:
    if isinstance(metric, MetricInfo):
        return metric
    if isinstance(metric, str):
        return get_metric(metric)
    if callable(metric):
        return MetricInfo(getattr(metric, "__name__", "callable"), metric, True, best=1.0)
    raise ValueError(
        f"metric must be a registered name (stitching.metrics.list_metrics()), a MetricInfo or a callable "
        f"f(x, y) -> float, got {type(metric).__name__}"
    )


def _check_settings(n_permutations: int, alpha: float) -> None:
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(
            f"n_permutations must be an int >= 1, got {n_permutations!r}; pass e.g. n_permutations=1000 "
            "(the p-value cannot go below 1 / (n_permutations + 1))"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}; pass e.g. alpha=0.05")


def _check_rows(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> int:
    """All activations are tensors with one row per sample, the same N everywhere; return N."""
    if len(xs) == 0 or len(ys) == 0:
        raise ValueError("permutation test: pass at least one x and one y activation")
    for side, ts in (("x", xs), ("y", ys)):
        for i, t in enumerate(ts):
            if not isinstance(t, Tensor) or t.ndim < 1:
                raise ValueError(f"permutation test: {side}[{i}] must be an (N, D) tensor, got {t!r:.80}")
    counts = sorted({int(t.shape[0]) for t in (*xs, *ys)})
    if len(counts) > 1:
        raise ValueError(
            f"permutation test: x and y must hold the same samples in the same order (one row each), got "
            f"N = {counts}; pass activations of the same inputs"
        )
    return counts[0]


def _permutations(n: int, k: int, seed: int, device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(k)]).to(device)


def _finite(values: Tensor, what: str, name: str) -> Tensor:
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} {what} value(s) are NaN or inf; the permutation test is undefined")
    return values


def _statistics(score: float, null: Tensor, info: MetricInfo, alpha: float) -> dict[str, float]:
    """p-value, quantiles and calibrated score as ``calibrated_similarity.calibrate`` computes them."""
    sign = 1.0 if info.higher_is_better else -1.0
    s, oriented = sign * score, sign * null
    k = oriented.numel()
    combined = torch.cat([oriented.new_tensor([s]), oriented]).sort().values
    tau = float(combined[min(max(math.ceil((1.0 - alpha) * (k + 1)) - 1, 0), k)])
    q = float(oriented.sort().values[min(max(math.ceil((1.0 - alpha) * k) - 1, 0), k - 1)])
    if info.best is None:
        calibrated = max(0.0, s - tau)
    else:
        calibrated = min(max((s - tau) / max(sign * info.best - tau, 1e-12), 0.0), 1.0)
    return {
        "score": score,
        "null_mean": float(null.mean()),
        "null95": sign * q,
        "threshold": sign * tau,
        "p_value": (1 + int((oriented >= s - _TIE * max(1.0, abs(s))).sum())) / (k + 1),
        "calibrated": calibrated,
    }


def permutation_test(
    metric: MetricLike,
    x: Tensor,
    y: Tensor,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_kwargs: dict[str, Any] | None = None,
    fast: bool = True,
) -> PermutationResult:
    """Score ``metric(x, y)`` and calibrate it against K permutations of y's rows.

    Args:
        metric: a registered name (``"linear_cka"``), a :class:`MetricInfo`, or a callable ``f(x, y)``
            taken as a similarity with best value 1 (wrap it in a ``MetricInfo`` to say otherwise).
        x: ``(N, Dx)``, y: ``(N, Dy)`` activations of the same N samples.
        n_permutations: K >= 1; the p-value is at least ``1 / (K + 1)``.
        seed: seeds the permutations (a CPU ``torch.Generator``), so results are reproducible.
        alpha: level of the threshold and of ``null95``.
        metric_kwargs: passed to the metric (e.g. ``{"topk": 10}``).
        fast: use the metric's fast path if it has one (``False`` forces the generic path; same values).
    """
    _check_settings(n_permutations, alpha)
    n = _check_rows([x], [y])
    info, kwargs = _resolve(metric), dict(metric_kwargs or {})
    score = float(
        _finite(torch.tensor([float(info.fn(x, y, **kwargs))], dtype=torch.float64), "observed", info.name)
    )
    scorer = info.null_scorer(x, y, fast=fast, **kwargs)
    null = _finite(scorer(_permutations(n, n_permutations, seed, x.device)).double().cpu(), "null", info.name)
    stats = _statistics(score, null, info, alpha)
    return PermutationResult(
        metric=info.name, n_permutations=n_permutations, seed=seed, alpha=alpha, null=null, **stats
    )


def permutation_test_max(
    metric: MetricLike,
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_kwargs: dict[str, Any] | None = None,
    fast: bool = True,
) -> MaxPermutationResult:
    """Calibrate the best score over all pairs ``(xs[i], ys[j])`` against the null of the best.

    Each null draw applies one permutation to the rows of every ``ys[j]`` and keeps the best pair's value, as
    ``calibrated_similarity.calibrate_layers(..., agg="max")`` does: picking the best of many cut pairs
    inflates the raw score, and only this null accounts for it. Arguments are as in :func:`permutation_test`;
    all activations hold the same N samples in the same order.
    """
    _check_settings(n_permutations, alpha)
    n = _check_rows(list(xs), list(ys))
    info, kwargs = _resolve(metric), dict(metric_kwargs or {})
    sign = 1.0 if info.higher_is_better else -1.0
    scores = torch.tensor([[float(info.fn(x, y, **kwargs)) for y in ys] for x in xs], dtype=torch.float64)
    _finite(scores, "observed", info.name)
    perms = _permutations(n, n_permutations, seed, xs[0].device)
    pair_nulls = [info.null_scorer(x, y, fast=fast, **kwargs)(perms).double().cpu() for x in xs for y in ys]
    null = sign * (sign * _finite(torch.stack(pair_nulls), "null", info.name)).max(0).values
    flat = int((sign * scores).flatten().argmax())
    best_pair = (flat // len(ys), flat % len(ys))
    stats = _statistics(float(scores[best_pair]), null, info, alpha)
    return MaxPermutationResult(
        metric=info.name,
        n_permutations=n_permutations,
        seed=seed,
        alpha=alpha,
        null=null,
        best_pair=best_pair,
        scores=scores,
        **stats,
    )
