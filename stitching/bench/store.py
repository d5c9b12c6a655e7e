"""Results store: one JSON record per cell, written atomically: a killed run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ResultStore:
    """Cell records under ``<root>/cells/<cell_id>.json``.

    A record is written to a temporary file in the same directory and moved into place with ``os.replace``,
    which is atomic on POSIX: readers see either no record or a complete one, and a cell id maps to exactly
    one file, so re-running a finished cell cannot duplicate it.
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
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        final = self.path(record["cell_id"])
        fd, tmp = tempfile.mkstemp(prefix=f".{record['cell_id']}.", suffix=".tmp", dir=self.cells_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=2, sort_keys=True, default=_jsonable)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def read(self, cell_id: str) -> dict[str, Any]:
        return json.loads(self.path(cell_id).read_text())

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
