"""One of each small helper the package needs: atomic file writes (a full disk said as such, temporary
files of killed writers cleaned up), stable hashes, did-you-mean hints."""

from __future__ import annotations

import difflib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644
"""Mode of every file the harness writes: readable by collaborators sharing a results directory."""
STALE_TEMP_S = 3600.0
"""A temporary file of another host (or of an unknown writer) this much older than now is a killed run's."""
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)~(?P<pid>\d+)\.[^.]+\.tmp$")
"""Name of a temporary file of `atomic_path`: ``.<name>.<host>~<pid>.<random>.tmp``."""


class DiskFullError(OSError):
    """No space left on the device while writing a file; says which file and what was kept."""


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; when the block ends, the file there is fsynced and
    moved onto ``path`` atomically (readers see the old file or the complete new one, never a torn one).

    If the block raises, the temporary file is removed and ``path`` is left as it was; a full disk raises
    `DiskFullError` naming ``path``. The temporary name carries this host and pid, so a later run can tell
    the leftovers of a killed writer (`remove_stale_temporaries`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.{_HOST}~{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    except OSError as error:
        if is_disk_full(error):
            raise _disk_full(path) from error
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error, path.parent):
            raise _disk_full(path) from error
        raise


def _disk_full(path: Path) -> DiskFullError:
    kept = f"the previous {path.name}" if path.exists() else f"nothing new ({path.name} not written)"
    return DiskFullError(
        errno.ENOSPC, f"no space left on device while writing {path}; kept: {kept}, no partial file"
    )


def is_disk_full(error: BaseException, directory: str | os.PathLike | None = None) -> bool:
    """Whether ``error`` (or what caused it) is a full disk: ``ENOSPC``/``EDQUOT``, or a library's write
    error (torch's ``file write failed``) while ``directory``'s filesystem has under 1 MiB free."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return False  # already said, with what was kept
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    if directory is None or not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(directory).free < 2**20
    except OSError:
        return False


def remove_stale_temporaries(directory: str | os.PathLike, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temporary files `atomic_path` left in ``directory`` (not below it) when its writer was
    killed: those of a dead process of this host, and any other older than ``max_age_s``. Returns them."""
    directory, now, removed = Path(directory), time.time(), []
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(".*.tmp"):
        match = _TEMP.match(tmp.name)
        try:
            age = now - tmp.stat().st_mtime
        except FileNotFoundError:
            continue  # its writer just finished
        mine = match is not None and match["host"] == _HOST
        if (mine and not pid_alive(int(match["pid"]))) or age > max_age_s:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def this_host() -> str:
    """This host's name as temporary files and claims carry it."""
    return _HOST


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
