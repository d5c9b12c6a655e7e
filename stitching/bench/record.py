"""The self-describing record of one cell: config, metrics with directions, versions, commit, timings."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "stitching.cell/1"

HIGHER_IS_BETTER = {
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
}

PACKAGES = ("stitching", "torch", "torchvision", "timm", "lightning", "torchmetrics", "numpy", "scikit-learn")


@cache
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@cache
def git_commit() -> str | None:
    """The commit of the stitching checkout, with ``+dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def metric_directions(metrics: dict[str, float]) -> dict[str, bool]:
    """Whether higher is better for each metric of a record (alignment metrics from their registry)."""
    from stitching.metrics import get_metric

    directions = {}
    for name in metrics:
        if name in HIGHER_IS_BETTER:
            directions[name] = HIGHER_IS_BETTER[name]
        else:
            directions[name] = bool(get_metric(name).higher_is_better)
    return directions


def make_record(
    cell: dict[str, Any], metrics: dict[str, float], timings: dict[str, float], **extra: Any
) -> dict[str, Any]:
    timings = dict(timings, total=sum(timings.values()))
    return {
        "schema": SCHEMA,
        "cell_id": cell["cell_id"],
        "suite": cell["suite"],
        "config": cell["config"],
        "metrics": metrics,
        "higher_is_better": metric_directions(metrics),
        "timings": timings,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **extra,
    }
