"""Results store: one JSON record per cell, written atomically: a killed run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def has(self, cell_id: str) -> bool:
        return self.path(cell_id).is_file()

    def write(self, record: dict[str, Any]) -> Path:
        """Atomically write ``record`` (which must carry ``cell_id``) and return its path."""
        text = json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n"
        return atomic_write(self.path(record["cell_id"]), text)

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


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a cell record")
