"""Validation of the statistics' inputs: every bad input is a ``ValueError`` that names the problem."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def correctness_matrix(
    correct: Mapping[str, np.ndarray], what: str = "correct"
) -> tuple[list[str], np.ndarray]:
    """The names of ``correct`` and its vectors stacked as a ``(names, images)`` boolean matrix.

    Each vector must be one-dimensional, boolean (or 0/1), and as long as the others, with at least 2 images.
    """
    if not correct:
        raise ValueError(f"{what}: no correctness vectors (expected a mapping name -> per-image booleans)")
    names = list(correct)
    rows = [_boolean_vector(name, correct[name], what) for name in names]
    lengths = {name: len(row) for name, row in zip(names, rows, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{what}: correctness vectors differ in length (one per test image): {lengths}")
    n_images = len(rows[0])
    if n_images < 2:
        raise ValueError(f"{what}: a bootstrap needs at least 2 test images, got {n_images}")
    return names, np.stack(rows)


def _boolean_vector(name: str, values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what}[{name!r}]: expected a 1-D per-image vector, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{what}[{name!r}]: expected booleans (or 0/1), got other values")
    return array.astype(bool)


def check_differences(
    differences: Mapping[str, tuple[str, str]] | None, names: list[str]
) -> dict[str, tuple[str, str]]:
    """``differences`` checked against ``names`` (``{"penalty": ("target", "stitched")}``: the target's
    accuracy minus the stitched one's)."""
    checked = dict(differences or {})
    for label, pair in checked.items():
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(f"difference {label!r}: expected a pair (minuend, subtrahend), got {pair!r}")
        missing = [name for name in pair if name not in names]
        if missing:
            raise ValueError(f"difference {label!r}: unknown name(s) {missing}; known: {names}")
    return {label: (pair[0], pair[1]) for label, pair in checked.items()}


def check_settings(n_resamples: int, level: float) -> None:
    """At least one resample, and a confidence level strictly between 0 and 1."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
