"""Paired and hierarchical bootstrap intervals for accuracies and their differences (penalties).

Intervals are percentile intervals (no bias correction): the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the resampled statistic (``numpy.quantile``, linear interpolation). The point estimate is the
statistic on the data as observed, not the mean of the resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stitching.stats._checks import check_differences, check_settings, correctness_matrix
from stitching.stats.resample import (
    percentile_interval,
    resampled_accuracies,
    resampled_group_weights,
    streams,
)
from stitching.stats.small import small_test_set_note

Differences = Mapping[str, tuple[str, str]]
"""``{label: (a, b)}``: the difference ``a - b`` of two names' accuracies, e.g. ``{"penalty": ("target",
"stitched")}``."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]`` (fractions, 0.9 = 90%)."""

    estimate: float
    low: float
    high: float

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high

    def scaled(self, factor: float) -> Interval:
        """The interval times ``factor`` (``scaled(100)``: fractions to percentage points)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor)

    def as_dict(self) -> dict[str, float | list[float]]:
        """``{"estimate": estimate, "ci": [low, high]}``."""
        return {"estimate": self.estimate, "ci": self.as_list()}

    def as_list(self) -> list[float]:
        """``[low, high]``, as a record stores it (``metrics.penalty_ci``)."""
        return [self.low, self.high]


@dataclass(frozen=True)
class BootstrapResult:
    """Per-name accuracy intervals and the requested differences' intervals from one bootstrap."""

    accuracy: dict[str, Interval]
    differences: dict[str, Interval]
    n_images: int
    n_groups: int
    n_resamples: int
    level: float
    seed: int
    note: str | None = None
    method: str = field(default="percentile")

    def as_dict(self) -> dict:
        """A JSON-ready summary: settings, ``{name: {"estimate": e, "ci": [low, high]}}`` and the note."""
        return {
            "method": self.method,
            "level": self.level,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "n_images": self.n_images,
            "n_groups": self.n_groups,
            "accuracy": {k: v.as_dict() for k, v in self.accuracy.items()},
            "differences": {k: v.as_dict() for k, v in self.differences.items()},
            "note": self.note,
        }


def paired_bootstrap(
    correct: Mapping[str, np.ndarray],
    *,
    differences: Differences | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap over the test images of one cell.

    ``correct`` maps a name ("target", "stitched", "lstsq", "control", ...) to a boolean per-image
    correctness vector, all of the same length N >= 2. Each of ``n_resamples`` resamples draws N image indices
    with replacement and applies them to every vector, so differences keep their pairing (a stitched vector
    equal to the target's gives a penalty interval of exactly [0, 0]). Deterministic for a ``seed``.
    """
    check_settings(n_resamples, level)
    names, matrix = correctness_matrix(correct)
    pairs = check_differences(differences, names)
    image_rng, _ = streams(seed)
    samples = resampled_accuracies(matrix, n_resamples, image_rng)
    estimates = matrix.mean(axis=1)
    accuracy, diffs = _summarise(names, estimates, samples, pairs, level)
    n_images = matrix.shape[1]
    return BootstrapResult(
        accuracy, diffs, n_images, 1, n_resamples, level, seed, note=small_test_set_note(n_images)
    )


def hierarchical_bootstrap(
    groups: Sequence[Mapping[str, np.ndarray]],
    *,
    differences: Differences | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    resample_groups: bool = True,
) -> BootstrapResult:
    """Two-level bootstrap of the mean over groups (seeds) of one leaderboard row, on shared test images.

    Each group is one cell's ``correct`` mapping (the same names, the same N test images in the same order).
    The statistic is the mean over groups of each name's accuracy. Each resample draws ``len(groups)`` groups
    with replacement (seed variation) and one set of N image indices with replacement (image variation);
    because every group is scored on the same images, that one image set is applied to every selected group
    and every name (paired across names and across seeds). ``resample_groups=False`` keeps all groups once
    (image variation only). With one group this is exactly :func:`paired_bootstrap` for the same ``seed``.
    """
    check_settings(n_resamples, level)
    names, stacked = _stack_groups(groups)
    pairs = check_differences(differences, names)
    n_groups, n_names, n_images = stacked.shape
    image_rng, group_rng = streams(seed)
    per_group = resampled_accuracies(stacked.reshape(n_groups * n_names, n_images), n_resamples, image_rng)
    per_group = per_group.reshape(n_resamples, n_groups, n_names)
    if resample_groups:
        weights = resampled_group_weights(n_groups, n_resamples, group_rng)
    else:
        weights = np.ones((n_resamples, n_groups))
    samples = np.einsum("bg,bgk->bk", weights, per_group) / n_groups
    estimates = stacked.mean(axis=2).mean(axis=0)
    accuracy, diffs = _summarise(names, estimates, samples, pairs, level)
    return BootstrapResult(
        accuracy, diffs, n_images, n_groups, n_resamples, level, seed, note=small_test_set_note(n_images)
    )


def _stack_groups(groups: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """The names (in the first group's order) and a ``(groups, names, images)`` boolean array."""
    if len(groups) == 0:
        raise ValueError("groups: no groups given (expected one correctness mapping per seed)")
    names, first = correctness_matrix(groups[0], what="groups[0]")
    stacked = [first]
    for i, group in enumerate(groups[1:], start=1):
        group_names, matrix = correctness_matrix(group, what=f"groups[{i}]")
        if set(group_names) != set(names):
            raise ValueError(f"groups[{i}]: names {sorted(group_names)} != groups[0]'s {sorted(names)}")
        if matrix.shape[1] != first.shape[1]:
            raise ValueError(
                f"groups[{i}]: {matrix.shape[1]} images, groups[0] has {first.shape[1]} "
                "(groups must be scored on the same test images)"
            )
        stacked.append(matrix[[group_names.index(name) for name in names]])
    return names, np.stack(stacked)


def _summarise(
    names: list[str],
    estimates: np.ndarray,
    samples: np.ndarray,
    pairs: dict[str, tuple[str, str]],
    level: float,
) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Percentile intervals for each name's accuracy and each requested difference."""
    column = {name: i for i, name in enumerate(names)}
    accuracy = {
        name: Interval(float(estimates[i]), *percentile_interval(samples[:, i], level))
        for name, i in column.items()
    }
    diffs = {}
    for label, (a, b) in pairs.items():
        ia, ib = column[a], column[b]
        estimate = float(estimates[ia] - estimates[ib])
        diffs[label] = Interval(estimate, *percentile_interval(samples[:, ia] - samples[:, ib], level))
    return accuracy, diffs
