"""One of each small helper the package needs: atomic file writes, stable hashes, did-you-mean hints."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
"""Mode of every file the harness writes: readable by collaborators sharing a results directory."""


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; when the block ends, the file there is fsynced and
    moved onto ``path`` atomically (readers see the old file or the complete new one, never a torn one).

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; see :func:`atomic_path`."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj``'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``"did you mean a, b? "`` for the choices close to ``word``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=cutoff)
    return f"did you mean {', '.join(close)}? " if close else ""
