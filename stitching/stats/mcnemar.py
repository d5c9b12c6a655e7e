"""Exact McNemar test: do two classifiers scored on the same images differ in accuracy?"""

from __future__ import annotations

import numpy as np

from stitching.stats._checks import correctness_matrix


def discordant_pairs(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """``(a right and b wrong, a wrong and b right)``: the images on which the two disagree."""
    _, matrix = correctness_matrix({"a": a, "b": b}, what="mcnemar")
    return int((matrix[0] & ~matrix[1]).sum()), int((~matrix[0] & matrix[1]).sum())


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for "``a`` and ``b`` differ in accuracy" (e.g. target vs stitched).

    Only the discordant images count: under the null each is equally likely to favour either side, so the
    number favouring ``a`` is Binomial(n_discordant, 1/2); the p-value is the two-sided one of
    ``scipy.stats.binomtest``. With no discordant images there is no evidence of a difference: p = 1.0.
    """
    from scipy.stats import binomtest  # imported here: scipy.stats takes over a second to import

    a_only, b_only = discordant_pairs(a, b)
    n_discordant = a_only + b_only
    if n_discordant == 0:
        return 1.0
    return float(binomtest(a_only, n_discordant, 0.5, alternative="two-sided").pvalue)
