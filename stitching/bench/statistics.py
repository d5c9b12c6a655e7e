"""A cell's statistics from its per-image test predictions: intervals for every accuracy and penalty, the
McNemar p-value of "stitched differs from target", and the small-test-set note.

The same function fills a new record and lets ``stitching leaderboard`` recompute everything from the
results store alone (``predictions/<cell_id>.npz``), without the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stitching.bench.controls import PREFIXES
from stitching.stats import mcnemar_p, paired_bootstrap

N_RESAMPLES = 2000
"""Bootstrap resamples of the test images."""
SEED = 0
"""Seed of the bootstrap resamples (fixed, so a record's intervals can be recomputed exactly)."""
LEVEL = 0.95
"""Coverage of every interval."""

MODELS = {"target": "target_acc", "source": "source_acc", "lstsq": "lstsq_acc", "init": "init_acc",
          "stitched": "stitched_acc"}  # fmt: skip
"""Prediction name -> accuracy metric (controls are added by their prefixes)."""


def cell_statistics(predictions: Mapping[str, Any]) -> dict[str, Any]:
    """``{"intervals": {metric: [low, high]}, "penalty_p": p, "n_images": n, "note": ..., ...}`` from the
    per-image predictions (``labels`` and one predicted class per model)."""
    labels = np.asarray(predictions["labels"])
    correct = {name: np.asarray(pred) == labels for name, pred in predictions.items() if name != "labels"}
    metric_of = dict(MODELS)
    stitched = "stitched" in correct  # absent when the adapter diverged
    differences = {"penalty": ("target", "stitched")} if stitched else {}
    for control, prefix in PREFIXES.items():
        if control in correct:
            metric_of[control] = f"{prefix}_acc"
            differences[f"{prefix}_penalty"] = ("target", control)
    result = paired_bootstrap(
        correct, differences=differences, n_resamples=N_RESAMPLES, seed=SEED, level=LEVEL
    )
    intervals = {metric_of[name]: iv.as_list() for name, iv in result.accuracy.items() if name in metric_of}
    intervals.update({name: iv.as_list() for name, iv in result.differences.items()})
    return {
        "intervals": intervals,
        "penalty_p": mcnemar_p(correct["target"], correct["stitched"]) if stitched else None,
        "n_images": result.n_images,
        "note": result.note,
        "method": f"paired percentile bootstrap, {N_RESAMPLES} resamples, seed {SEED}; McNemar exact",
    }
