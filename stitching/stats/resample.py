"""The vectorised bootstrap core: image (and group) resamples drawn once, accuracies from draw counts.

Random streams: ``seed`` is split (``numpy.random.SeedSequence(seed).spawn(2)``) into one stream for the image
resamples and one for the group (seed) resamples, so the image draws of a seed are the same whether or not
groups are resampled; this is what makes the hierarchical bootstrap of one group equal the paired one.
"""

from __future__ import annotations

import numpy as np

MAX_COUNTS = 1 << 22
"""Entries of one chunk's ``(resamples, images)`` count matrix (resamples are processed in chunks)."""


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(image_rng, group_rng)``: two independent generators derived from ``seed``."""
    image_seq, group_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(image_seq), np.random.default_rng(group_seq)


def resampled_accuracies(matrix: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracy of every row of a ``(rows, images)`` boolean matrix under ``n_resamples`` image resamples.

    Each resample draws N image indices with replacement and applies the same indices to every row (paired).
    Rather than gathering booleans, it counts how often each image was drawn and takes ``counts @ matrix.T``:
    the same numbers, faster. All partial sums are integers (exact in float64), so identical rows give
    identical resampled accuracies. Returns a ``(n_resamples, rows)`` float array.
    """
    n_rows, n_images = matrix.shape
    columns = matrix.T.astype(np.float64)
    chunk = max(1, MAX_COUNTS // n_images)
    out = np.empty((n_resamples, n_rows))
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        index = rng.integers(0, n_images, size=(stop - start, n_images))
        out[start:stop] = draw_counts(index, n_images) @ columns / n_images
    return out


def draw_counts(draws: np.ndarray, n_values: int) -> np.ndarray:
    """How often each of ``0 .. n_values - 1`` occurs in each row of the integer array ``draws``."""
    n_rows = draws.shape[0]
    offsets = (np.arange(n_rows) * n_values)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_rows * n_values)
    return counts.reshape(n_rows, n_values).astype(np.float64)


def resampled_group_weights(n_groups: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n_groups`` groups is drawn (with replacement, ``n_groups`` draws) per resample.

    Returns a ``(n_resamples, n_groups)`` array of counts (as floats) whose rows sum to ``n_groups``.
    """
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    return draw_counts(draws, n_groups)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile bootstrap interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles."""
    low, high = np.quantile(samples, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
