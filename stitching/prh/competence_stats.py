"""Statistics of the competence suite: mean pairwise alignment per model and per competence bin, with
bootstrap intervals over models, and rank correlations with permutation p-values.

Pairs share models, so pair-level tests would overstate the evidence: every interval here resamples models
(a pair's score enters when both its models are drawn), and every p-value permutes competence (or level)
labels between models, within each family (``strata``), so that a difference between families in both
competence and alignment cannot pass for a competence effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def off_diagonal_mean(matrix: np.ndarray, rows: Sequence[int], cols: Sequence[int] | None = None) -> float:
    """Mean of ``matrix[i, j]`` over ``i`` in ``rows``, ``j`` in ``cols`` (default ``rows``), ``i != j``
    positions (a model drawn twice by a bootstrap is not paired with itself)."""
    cols = rows if cols is None else cols
    block = matrix[np.ix_(rows, cols)]
    if cols is rows:
        mask = ~np.eye(len(rows), dtype=bool)
        same = np.equal.outer(np.asarray(rows), np.asarray(rows))
        block = block[mask & ~same]
    return float(np.nanmean(block)) if block.size else float("nan")


def mean_alignment(matrix: pd.DataFrame) -> pd.Series:
    """Each model's mean alignment with every other model (the diagonal left out)."""
    values = matrix.to_numpy(dtype=float).copy()
    np.fill_diagonal(values, np.nan)
    return pd.Series(np.nanmean(values, axis=1), index=matrix.index)


def bin_alignment(matrix: pd.DataFrame, bins: pd.Series, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean alignment among the models of each bin (the PRH paper's figure), with a 95% bootstrap interval
    that resamples the bin's models. ``bins``: model -> bin label, indexed like ``matrix``."""
    values = matrix.loc[bins.index, bins.index].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    rows = []
    for label in sorted(bins.unique()):
        members = np.flatnonzero(bins.to_numpy() == label)
        boots = [off_diagonal_mean(values, rng.choice(members, len(members))) for _ in range(n_boot)]
        low, high = np.nanpercentile(boots, [2.5, 97.5]) if len(members) > 1 else (np.nan, np.nan)
        rows.append({"bin": label, "n_models": len(members), "mean": off_diagonal_mean(values, members),
                     "low": low, "high": high})  # fmt: skip
    return pd.DataFrame(rows)


def bin_difference(
    matrix: pd.DataFrame,
    bins: pd.Series,
    high,
    low,
    strata: pd.Series | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Within-bin mean alignment of bin ``high`` minus that of bin ``low``: the estimate, its 95% bootstrap
    interval (models resampled within each bin) and a two-sided permutation p-value (add-one) that swaps
    bin labels between the two bins' models, within each stratum (e.g. family) when ``strata`` is given."""
    chosen = bins[bins.isin([high, low])]
    values = matrix.loc[chosen.index, chosen.index].to_numpy(dtype=float)
    labels = chosen.to_numpy()
    groups = np.zeros(len(labels), int) if strata is None else pd.factorize(strata.loc[chosen.index])[0]

    def diff(lab: np.ndarray) -> float:
        return off_diagonal_mean(values, np.flatnonzero(lab == high)) - off_diagonal_mean(
            values, np.flatnonzero(lab == low)
        )

    rng = np.random.default_rng(seed)
    a, b = np.flatnonzero(labels == high), np.flatnonzero(labels == low)
    boots = [
        off_diagonal_mean(values, rng.choice(a, len(a))) - off_diagonal_mean(values, rng.choice(b, len(b)))
        for _ in range(n_boot)
    ]
    estimate, count = diff(labels), 0
    for _ in range(n_boot):
        permuted = labels.copy()
        for g in np.unique(groups):
            where = np.flatnonzero(groups == g)
            permuted[where] = labels[rng.permutation(where)]
        count += abs(diff(permuted)) >= abs(estimate) - 1e-12
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"difference": estimate, "low": float(lo), "high": float(hi), "p": (count + 1) / (n_boot + 1)}


def spearman_permutation(
    x: Sequence[float],
    y: Sequence[float],
    strata: Sequence | None = None,
    n_permutations: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """Spearman's rho of ``x`` and ``y`` and a two-sided permutation p-value (add-one); with ``strata``,
    ``x`` is permuted only within each stratum."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(
            f"spearman_permutation needs two equal-length samples of at least 3, got {len(x)}, {len(y)}"
        )
    rx, ry = rankdata(x), rankdata(y)
    rho = _pearson(rx, ry)
    groups = np.zeros(len(x), int) if strata is None else pd.factorize(np.asarray(strata))[0]
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(n_permutations):
        permuted = rx.copy()
        for g in np.unique(groups):
            where = np.flatnonzero(groups == g)
            permuted[where] = rx[rng.permutation(where)]
        count += abs(_pearson(permuted, ry)) >= abs(rho) - 1e-12
    return {"rho": rho, "p": (count + 1) / (n_permutations + 1), "n": len(x)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")
