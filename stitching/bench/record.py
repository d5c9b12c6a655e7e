"""The self-describing record of one cell: config, metrics with directions, versions, commit, timings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from stitching.bench.columns import CELL_METRICS as HIGHER_IS_BETTER
from stitching.bench.columns import split_suffix

SCHEMA = "stitching.cell/2"
"""Version of the record layout; a record of another version is refused when read."""
READABLE = ("stitching.cell/1", SCHEMA)
"""Versions this code reads: version 1 is version 2 without ``statistics`` (and without kept predictions)."""


class RecordError(ValueError):
    """A cell record that cannot be read as this version's `CellRecord`."""


@dataclass
class CellRecord:
    """The record of one finished cell, as stored in ``<results>/<suite>/cells/<cell_id>.json``."""

    schema: str
    """Layout version, ``SCHEMA`` when written by this code."""
    cell_id: str
    """Content hash of ``config``."""
    suite: dict[str, Any]
    """``{name, version}`` of the suite the cell came from."""
    config: dict[str, Any]
    """The resolved cell config (what ``cell_id`` hashes)."""
    metrics: dict[str, float]
    """Scores of the cell by metric name."""
    higher_is_better: dict[str, bool]
    """Direction of every metric in ``metrics``."""
    timings: dict[str, float]
    """Seconds per phase, and their ``total``."""
    versions: dict[str, str]
    """Python and library versions of the run."""
    git_commit: str | None
    """Commit of the stitching checkout (``+dirty`` with uncommitted changes), None outside git."""
    created: str
    """UTC time the record was made (ISO 8601, seconds)."""
    host: str
    """Machine the cell ran on."""
    adapter_params: int | None = None
    """Trainable parameters of the adapter."""
    training: dict[str, Any] | None = None
    """Adapter-training details (steps, losses, checkpoint resumes)."""
    base_models: dict[str, Any] | None = None
    """How the source and target models were obtained (trained, loaded, cached)."""
    specs: dict[str, Any] | None = None
    """Activation shapes at the two cuts."""
    features: dict[str, str] | None = None
    """Keys of the reduced test activations the alignment metrics saw (``features/<key>.npy``), by side."""
    alignment_errors: dict[str, str] | None = None
    """Alignment metrics that could not be computed (a degenerate activation: constant, dead, all-tied),
    with the reason; the cell's other results stand."""
    statistics: dict[str, Any] | None = None
    """95% intervals of every accuracy and penalty, the McNemar p-value, the method and test-set size
    (``stitching.bench.statistics``), recomputable from the kept predictions."""
    nonfinite: dict[str, str] | None = None
    """Numbers that are not finite (``nan``, ``inf``, ``-inf``) by JSON pointer (``/metrics/x``): the file
    holds ``null`` there, so it stays strict JSON; `stitching.bench.store` restores them on read."""
    claim: dict[str, Any] | None = None
    """Who computed the cell under its claim (``host``, ``pid``, ``took_over`` a stale claim)."""
    activations: dict[str, Any] | None = None
    """How the front activations were kept: ``path`` (``cached`` or ``streamed``: the training split's),
    ``dtype``, and the ``train_subset`` draw (images per class, seed, images, index hash)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; extra fields left as None are left out, as before they were typed."""
        record = dataclasses.asdict(self)
        return {k: v for k, v in record.items() if v is not None or k not in _EXTRA}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "record") -> CellRecord:
        """A record from its JSON form; raises `RecordError` for another schema or unknown/missing keys."""
        if not isinstance(data, dict):
            raise RecordError(f"{source}: a cell record must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema not in READABLE:
            raise RecordError(
                f"{source}: record schema {schema!r}, but this code reads {SCHEMA!r}; "
                "re-run the cell or read it with the version that wrote it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in names - set(data) if n not in _EXTRA)
        if unknown or missing:
            raise RecordError(f"{source}: unknown keys {unknown}, missing keys {missing}")
        return cls(**data)


_EXTRA = (
    *("adapter_params", "training", "base_models", "specs", "statistics", "features", "alignment_errors"),
    *("nonfinite", "claim", "activations"),
)

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
    directions = {}
    for name in metrics:
        if name in HIGHER_IS_BETTER:
            directions[name] = HIGHER_IS_BETTER[name]
            continue
        from stitching.metrics import get_metric  # only for alignment metrics: it imports torch

        base, suffix = split_suffix(name)
        directions[name] = False if suffix == "_p" else bool(get_metric(base).higher_is_better)
    return directions


def make_record(
    cell: dict[str, Any], metrics: dict[str, float], timings: dict[str, float], **extra: Any
) -> dict[str, Any]:
    """The JSON form of the `CellRecord` of ``cell`` (``cell_id``, ``suite``, ``config``); ``extra`` are
    the record's optional fields (``adapter_params``, ``training``, ``base_models``, ``specs``)."""
    record = CellRecord(
        schema=SCHEMA,
        cell_id=cell["cell_id"],
        suite=cell["suite"],
        config=cell["config"],
        metrics=metrics,
        higher_is_better=metric_directions(metrics),
        timings=dict(timings, total=sum(timings.values())),
        versions=library_versions(),
        git_commit=git_commit(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        host=platform.node(),
        **extra,
    )
    return record.to_dict()
