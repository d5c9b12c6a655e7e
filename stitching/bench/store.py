"""Results store: one JSON record per cell, written atomically: a killed run loses and duplicates nothing.

Beside each record, ``predictions/<cell_id>.npz`` keeps the cell's per-image test predictions (labels,
target, source, lstsq, init, stitched, each control): every statistic of the leaderboard is recomputed from
them, without the models. They are written before the record, so a record implies its predictions.

A store can be shared and re-read: records are strict JSON (a NaN or infinity is written as ``null`` and
named in the record's ``nonfinite``, and restored on read), group-readable, and checked against their schema
when read. A file in ``cells/`` that is not a readable record of this version (truncated, empty, not JSON,
another schema) is named in a `StoreWarning`, moved to ``quarantine/`` (never deleted) and its cell counts
as not done, so the next run recomputes it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stitching._utils import atomic_write
from stitching.bench.record import CellRecord, RecordError

QUARANTINE = "quarantine"
"""Folder of a store where damaged or foreign files are moved, under their path relative to the store."""


class StoreWarning(UserWarning):
    """A file of the store that could not be used: what it was, why, and where it was moved."""


class ResultStore:
    """Cell records under ``<root>/cells/<cell_id>.json``.

    A record is written to a temporary file in the same directory and moved into place with ``os.replace``,
    which is atomic on POSIX: readers see either no record or a complete one, and a cell id maps to exactly
    one file, so re-running a finished cell cannot duplicate it. Files are group-readable (0644). Reading
    checks the record's schema; a file that fails the check is quarantined (see the module docstring).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.predictions_dir = self.root / "predictions"
        self.quarantine_dir = self.root / QUARANTINE

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def has(self, cell_id: str) -> bool:
        """Whether ``cell_id`` has a valid record (a damaged one is quarantined: not done)."""
        return self._load(self.path(cell_id)) is not None

    def write(self, record: dict[str, Any], predictions: Mapping[str, Any] | None = None) -> Path:
        """Atomically write ``record`` (which must carry ``cell_id``), after its ``predictions`` (per-image
        predicted classes by model, and the ``labels``) if given; returns the record's path."""
        if predictions is not None:
            self.write_predictions(record["cell_id"], predictions)
        return atomic_write(self.path(record["cell_id"]), to_strict_json(record))

    def predictions_path(self, cell_id: str) -> Path:
        return self.predictions_dir / f"{cell_id}.npz"

    def write_predictions(self, cell_id: str, predictions: Mapping[str, Any]) -> Path:
        """Per-image predictions of a cell, compressed (int16 class indices)."""
        arrays = {name: np.asarray(_numpy(v), dtype=np.int16) for name, v in predictions.items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"cell {cell_id}: predictions of different lengths {sorted(lengths)}")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return atomic_write(self.predictions_path(cell_id), buffer.getvalue())

    def write_features(self, key: str, features: Any) -> str:
        """Reduced test activations (N, D) shared by the cells that name ``key``; written once."""
        path = self.root / "features" / f"{key}.npy"
        if not path.is_file():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(_numpy(features), dtype=np.float32), allow_pickle=False)
            atomic_write(path, buffer.getvalue())
        return key

    def features(self, key: str) -> np.ndarray:
        """The activations written under ``key`` (float32, never unpickled)."""
        return np.load(self.root / "features" / f"{key}.npy", allow_pickle=False)

    def predictions(self, cell_id: str) -> dict[str, np.ndarray] | None:
        """A cell's per-image predictions by model (``labels`` included), or None when not kept."""
        path = self.predictions_path(cell_id)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:  # never unpickles
            return {name: data[name].astype(np.int64) for name in data.files}

    def read(self, cell_id: str) -> dict[str, Any]:
        """The record of ``cell_id`` as stored (JSON, non-finite numbers restored), checked against this
        version's schema first; raises `RecordError` naming the file (then quarantined) if it fails."""
        path = self.path(cell_id)
        data = self._load(path, error=True)
        assert data is not None
        return data

    def read_record(self, cell_id: str) -> CellRecord:
        """The typed record of ``cell_id``."""
        return CellRecord.from_dict(self.read(cell_id), str(self.path(cell_id)))

    def finished_ids(self) -> set[str]:
        """Ids of the cells with a valid record; damaged or foreign files are quarantined on the way."""
        if not self.cells_dir.is_dir():
            return set()
        paths = [p for p in self.cells_dir.glob("*.json") if not p.name.startswith(".")]
        return {p.stem for p in paths if self._load(p) is not None}

    def records(self) -> Iterator[dict[str, Any]]:
        """All valid records, in cell-id order (temporary files of interrupted writes are ignored, damaged
        files quarantined with a warning)."""
        for cell_id in sorted(self.finished_ids()):
            data = self._load(self.path(cell_id))
            if data is not None:
                yield data

    def __len__(self) -> int:
        return len(self.finished_ids())

    def quarantine(self, path: str | os.PathLike, reason: str) -> Path | None:
        """Move ``path`` (inside the store) to ``quarantine/`` under its relative path and a time stamp, with
        a `StoreWarning` naming both and ``reason``; returns where it went (None if it was gone already)."""
        path = Path(path)
        relative = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.quarantine_dir / relative.parent / f"{relative.name}.{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # another reader moved it first
        named = reason if reason.startswith(str(path)) else f"{path}: {reason}"
        warnings.warn(f"{named}; moved to {target}", StoreWarning, stacklevel=3)
        return target

    def _load(self, path: Path, error: bool = False) -> dict[str, Any] | None:
        """The valid record at ``path``, or None when there is none; a damaged file is quarantined (and
        with ``error`` a `RecordError` says so)."""
        try:
            with open(path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                raw = f.read()
        except FileNotFoundError:
            if error:
                raise RecordError(f"{path}: no such record") from None
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
            CellRecord.from_dict(data, str(path))  # raises RecordError naming the file and both versions
        except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as problem:
            reason = _why(raw, problem)
            try:
                replaced = os.stat(path).st_ino != inode  # rewritten since we read it: judge the new file
            except FileNotFoundError:
                replaced = True
            if replaced:
                return self._load(path, error)
            moved = self.quarantine(path, f"{reason} (the cell will be recomputed)")
            if error:
                raise RecordError(f"{path}: {reason}; moved to {moved}") from problem
            return None
        return restore_nonfinite(data)


def _why(raw: bytes, problem: Exception) -> str:
    """Why a file is not a record, without its path (`RecordError` names it: that part is dropped)."""
    if not raw.strip():
        return "empty file, not a cell record"
    if isinstance(problem, RecordError):
        return str(problem).split(": ", 1)[-1]
    return f"not a complete JSON cell record ({type(problem).__name__}: {problem})"


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def to_strict_json(record: Mapping[str, Any]) -> str:
    """``record`` as strict JSON (RFC 8259): NaN and infinities become ``null`` and their JSON pointers go
    to ``nonfinite`` (``{"/metrics/x": "nan"}``), which `restore_nonfinite` reads back."""
    nonfinite: dict[str, str] = {}
    plain = _plain({k: v for k, v in record.items() if k != "nonfinite"}, "", nonfinite)
    if nonfinite:
        plain["nonfinite"] = nonfinite
    return json.dumps(plain, indent=2, sort_keys=True, allow_nan=False) + "\n"


def restore_nonfinite(data: dict[str, Any]) -> dict[str, Any]:
    """The record with the numbers its ``nonfinite`` names put back (the inverse of `to_strict_json`)."""
    for pointer, value in (data.get("nonfinite") or {}).items():
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = float(value)
        else:
            node[last] = float(value)
    return data


def _plain(obj: Any, pointer: str, nonfinite: dict[str, str]) -> Any:
    """JSON types only; non-finite floats become None, noted by their pointer in ``nonfinite``."""
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, f"{pointer}/{_escape(str(k))}", nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{pointer}/{i}", nonfinite) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        nonfinite[pointer] = str(obj)  # "nan", "inf", "-inf": float() reads each back
        return None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {pointer or '/'} in a cell record")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
