"""The columns of a cell, declared once: the cell metrics that are not alignment metrics, with their
directions, and the numeric columns that describe a cell rather than score it.

Records (:mod:`stitching.bench.record`), leaderboards and plots read these; every other float column of the
cell table is an alignment metric (from :mod:`stitching.metrics`, which declares its own direction).
"""

from __future__ import annotations

CELL_METRICS: dict[str, bool] = {
    "target_acc": True,
    "source_acc": True,
    "lstsq_acc": True,
    "init_acc": True,
    "stitched_acc": True,
    "stitched_val_acc": True,
    "agreement": True,
    "penalty": False,
    "control_init_acc": True,
    "control_acc": True,
    "control_penalty": False,
    "noise_init_acc": True,
    "noise_acc": True,
    "noise_penalty": False,
    "penalty_p": False,
}
"""Accuracy-type metrics of a cell -> whether higher is better."""

ID_COLUMNS: frozenset[str] = frozenset(
    {"source_seed", "target_seed", "stitch_seed", "adapter_params", "seconds", "source_depth", "target_depth"}
)
"""Numeric columns of the cell table that identify or describe a cell: never averaged as metrics."""

NOT_ALIGNMENT: frozenset[str] = frozenset(CELL_METRICS) | ID_COLUMNS
"""Numeric cell-table columns that are not alignment metrics."""

CELL_INTERVALS = (
    "target_acc",
    "source_acc",
    "lstsq_acc",
    "init_acc",
    "stitched_acc",
    "control_acc",
    "noise_acc",
    "penalty",
    "control_penalty",
    "noise_penalty",
)
"""Metrics whose 95% interval a record carries (``statistics.intervals``): ``<m>_low``/``<m>_high``."""

INTERVAL_COLUMNS = frozenset(f"{m}_{side}" for m in CELL_INTERVALS for side in ("low", "high"))
DESCRIPTIVE = frozenset({"n_test_images"}) | INTERVAL_COLUMNS
"""Numeric cell-table columns added here that are neither averaged as metrics nor alignment metrics."""


ALIGNMENT_SUFFIXES = ("_p", "_null95", "_calibrated")
"""Columns derived from an alignment metric's permutation test: its p-value, the null's 95th percentile
and the calibrated score (``stitching.metrics.permutation_test``)."""


def split_suffix(name: str) -> tuple[str, str]:
    """``("linear_cka", "_p")`` for ``"linear_cka_p"``; ``(name, "")`` for a plain metric."""
    for suffix in ALIGNMENT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""
