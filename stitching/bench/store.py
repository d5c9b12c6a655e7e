"""Results store: one JSON record per cell, written atomically: a killed run loses and duplicates nothing.

Beside each record, ``predictions/<cell_id>.npz`` keeps the cell's per-image test predictions (labels,
target, source, lstsq, init, stitched, each control): every statistic of the leaderboard is recomputed from
them, without the models. They are written before the record, so a record implies its predictions.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stitching._utils import atomic_write
from stitching.bench.record import CellRecord


class ResultStore:
    """Cell records under ``<root>/cells/<cell_id>.json``.

    A record is written to a temporary file in the same directory and moved into place with ``os.replace``,
    which is atomic on POSIX: readers see either no record or a complete one, and a cell id maps to exactly
    one file, so re-running a finished cell cannot duplicate it. Files are group-readable (0644). Reading
    checks the record's schema: a record of another version raises `stitching.bench.record.RecordError`.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.predictions_dir = self.root / "predictions"

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def has(self, cell_id: str) -> bool:
        return self.path(cell_id).is_file()

    def write(self, record: dict[str, Any], predictions: Mapping[str, Any] | None = None) -> Path:
        """Atomically write ``record`` (which must carry ``cell_id``), after its ``predictions`` (per-image
        predicted classes by model, and the ``labels``) if given; returns the record's path."""
        if predictions is not None:
            self.write_predictions(record["cell_id"], predictions)
        text = json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n"
        return atomic_write(self.path(record["cell_id"]), text)

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
        """The record of ``cell_id`` as stored (JSON), checked against this version's schema first."""
        path = self.path(cell_id)
        data = json.loads(path.read_text())
        CellRecord.from_dict(data, str(path))  # raises RecordError naming the file and both versions
        return data

    def read_record(self, cell_id: str) -> CellRecord:
        """The typed record of ``cell_id``."""
        return CellRecord.from_dict(self.read(cell_id), str(self.path(cell_id)))

    def finished_ids(self) -> set[str]:
        if not self.cells_dir.is_dir():
            return set()
        return {p.stem for p in self.cells_dir.glob("*.json") if not p.name.startswith(".")}

    def records(self) -> Iterator[dict[str, Any]]:
        """All complete records, in cell-id order (temporary files of interrupted writes are ignored)."""
        for cell_id in sorted(self.finished_ids()):
            yield self.read(cell_id)

    def __len__(self) -> int:
        return len(self.finished_ids())


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a cell record")
