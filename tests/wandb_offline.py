"""Test helper: read offline W&B runs back, the ``run-<id>.wandb`` record stream and the table JSON files.

wandb 0.31 ships no Python reader for ``.wandb`` files (its writer lives in the Go core). The file is a
LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks,
each ``crc32 (uint32 LE) | length (uint16 LE) | type (uint8) | data``, where ``type`` says whether the chunk
is a whole record (FULL) or its FIRST, MIDDLE or LAST part; the CRC is zlib's CRC-32 of type byte + data.
Each reassembled record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")
HEADER_IDENT, HEADER_MAGIC = b":W&B", 0xBEE1
CHUNK = struct.Struct("<IHB")
BLOCK_LEN = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class CorruptRunFile(ValueError):
    """A ``.wandb`` file whose header or a chunk checksum does not match."""


def read_wandb_records(path: str | Path) -> Iterator[pb.Record]:
    """Yield every record of a ``run-<id>.wandb`` file, checking each chunk's CRC.

    A truncated final chunk (a run killed mid-write) ends the stream quietly, as wandb's own reader does.
    """
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        raise CorruptRunFile(f"{path}: too short for a W&B header")
    ident, magic, _version = HEADER.unpack_from(data)
    if ident != HEADER_IDENT or magic != HEADER_MAGIC:
        raise CorruptRunFile(f"{path}: not a W&B run file (header {data[: HEADER.size]!r})")
    pos, parts = HEADER.size, []
    while pos + CHUNK.size <= len(data):
        left = BLOCK_LEN - pos % BLOCK_LEN
        if left < CHUNK.size:  # block trailer: zero padding, no chunk fits
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        start, end = pos + CHUNK.size, pos + CHUNK.size + length
        if end > len(data):
            return
        chunk = data[start:end]
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            raise CorruptRunFile(f"{path}: checksum mismatch at byte {pos}")
        pos = end
        if kind == FULL:
            parts = [chunk]
        elif kind == FIRST:
            parts = [chunk]
            continue
        elif kind == MIDDLE:
            parts.append(chunk)
            continue
        elif kind == LAST:
            parts.append(chunk)
        else:
            raise CorruptRunFile(f"{path}: unknown chunk type {kind} at byte {pos}")
        record = pb.Record()
        record.ParseFromString(b"".join(parts))
        yield record


@dataclass
class OfflineRun:
    """What an offline run recorded, folded the way the W&B server folds it."""

    dir: Path
    id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def table(self, key: str) -> pd.DataFrame:
        """A ``wandb.Table`` logged under ``key``, read from its JSON file under ``files/media/table``."""
        ref = self.summary.get(key)
        if not isinstance(ref, dict) or ref.get("_type") != "table-file":
            raise KeyError(f"run {self.id} has no table {key!r}; summary keys: {', '.join(self.summary)}")
        payload = json.loads((self.dir / "files" / ref["path"]).read_text())
        return pd.DataFrame(payload["data"], columns=payload["columns"])


def read_offline_run(run_dir: str | Path, timeout: float = 30.0) -> OfflineRun:
    """Fold the record stream of one ``offline-run-*`` directory into config, summary, history and files.

    ``run.finish()`` returns before wandb's core process has flushed the stream (measured: a file holding
    only its header right after ``finish``), so this waits up to ``timeout`` seconds for the exit record; a
    run that never finished (killed) is returned as far as it got, with ``exit_code`` None.
    """
    run_dir = Path(run_dir)
    deadline = time.monotonic() + timeout
    while True:
        run = _fold(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def _fold(run_dir: Path) -> OfflineRun:
    streams = sorted(run_dir.glob("run-*.wandb"))
    if not streams:
        raise FileNotFoundError(f"no run-<id>.wandb file in {run_dir}")
    run = OfflineRun(dir=run_dir)
    for record in read_wandb_records(streams[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.project, run.entity = r.run_id, r.project, r.entity
            run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            _apply(run.config, r.config)
            _apply(run.summary, r.summary)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "summary":
            _apply(run.summary, record.summary)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _key(item), json.loads(item.value_json))
            run.history.append(row)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def offline_runs(wandb_dir: str | Path, timeout: float = 30.0) -> list[OfflineRun]:
    """Every offline run under ``wandb_dir`` (the ``wandb/`` folder or its parent), oldest first; see
    ``read_offline_run`` for ``timeout``."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    return [read_offline_run(d, timeout) for d in sorted(root.glob("offline-run-*")) if d.is_dir()]


def _key(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _apply(target: dict[str, Any], record: Any) -> None:
    for item in record.update:
        _set(target, _key(item), json.loads(item.value_json))
    for item in record.remove:
        *parents, last = _key(item)
        node = target
        for k in parents:
            node = node.get(k, {})
        node.pop(last, None)


def _set(target: dict[str, Any], keys: list[str], value: Any) -> None:
    *parents, last = keys
    for k in parents:
        target = target.setdefault(k, {})
    target[last] = value
