"""Per-cell claims: any number of processes on one store (local workers, SLURM array tasks, two users, hosts
sharing a filesystem) never compute the same cell at the same time.

Before computing a cell a process claims it: ``<store>/claims/<cell_id>.json`` (host, pid, start time, a
random token) is created with ``os.link`` from a complete temporary file, which fails if the claim exists,
atomically on local and network filesystems alike (no ``flock``). While the cell runs, a heartbeat thread
touches the claim's modification time every ``lease/5`` seconds. A claim whose heartbeat is older than the
lease (``STITCHING_CLAIM_LEASE_S``, default 300 s), or whose process is gone from this host, is stale: a
taker renames it away (only one rename of a file succeeds), checks that what it moved is the stale claim it
judged and not a fresh one, and then creates its own. A cell whose claim is live is left to its holder.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stitching._utils import FILE_MODE, pid_alive, this_host
from stitching.bench.store import ResultStore

DEFAULT_LEASE_S = 300.0
"""Seconds without a heartbeat after which a claim is stale (its claimer presumed dead)."""


def lease_seconds(lease_s: float | None = None) -> float:
    """``lease_s``, else ``$STITCHING_CLAIM_LEASE_S``, else `DEFAULT_LEASE_S`."""
    if lease_s is not None:
        return float(lease_s)
    return float(os.environ.get("STITCHING_CLAIM_LEASE_S", DEFAULT_LEASE_S))


class CellClaimed(RuntimeError):
    """The cell is being computed by another live process (its claim holder is named)."""


@dataclass(frozen=True)
class Holder:
    """What a claim file says, and how old its heartbeat is."""

    cell_id: str
    host: str
    pid: int
    token: str
    started: str
    heartbeat_age_s: float

    def describe(self) -> str:
        age = f"{self.heartbeat_age_s:.0f} s"
        return f"host {self.host} pid {self.pid} since {self.started}, heartbeat {age} ago"

    def stale(self, lease_s: float) -> bool:
        """No heartbeat for ``lease_s``, or a process of this host that is gone."""
        dead_here = self.host == this_host() and self.pid != os.getpid() and not pid_alive(self.pid)
        return self.heartbeat_age_s > lease_s or dead_here


class Claim:
    """A cell this process holds: a heartbeat thread keeps it live until `release` (or the ``with`` ends)."""

    def __init__(self, path: Path, holder: Holder, lease_s: float, took_over: bool) -> None:
        self.path, self.holder, self.lease_s, self.took_over = path, holder, lease_s, took_over
        self.lost = False
        """Set when the claim file no longer holds this process's token (taken over after a missed lease)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{holder.cell_id}", daemon=True)
        self._thread.start()

    def describe(self) -> dict[str, Any]:
        """For the record: who computed the cell, and whether it took over a stale claim."""
        return {"host": self.holder.host, "pid": self.holder.pid, "took_over": self.took_over}

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 5):
            current = read_holder(self.path)
            if current is None or current.token != self.holder.token:
                self.lost = True
                warnings.warn(
                    f"claim {self.path} was taken over after a missed heartbeat; another process may "
                    "compute this cell too (the record stays consistent: one file per cell)",
                    stacklevel=1,
                )
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                continue  # released or taken over meanwhile: the next beat tells which

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, if it is still this process's."""
        self._stop.set()
        self._thread.join()
        current = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claims_dir(store_root: str | os.PathLike) -> Path:
    """Where the claims of a store live."""
    return Path(store_root) / "claims"


def read_holder(path: Path) -> Holder | None:
    """The claim at ``path``, or None when there is none. A claim being written (an empty or partial
    file, only with filesystems without hard links) reads as an unknown holder whose age is its file's."""
    try:
        with open(path, "rb") as f:
            age = time.time() - os.fstat(f.fileno()).st_mtime
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(raw)
        return Holder(info["cell_id"], info["host"], int(info["pid"]), info["token"], info["started"], age)
    except (ValueError, KeyError, TypeError):
        return Holder(path.stem, "?", -1, "", "?", age)


def try_claim(directory: str | os.PathLike, cell_id: str, lease_s: float | None = None) -> Claim | Holder:
    """Claim ``cell_id``: a `Claim` (heartbeat running) when this process now holds it, else the `Holder`
    of the live claim. A stale claim is taken over."""
    lease = lease_seconds(lease_s)
    path = Path(directory) / f"{cell_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    took_over = False
    for _ in range(100):  # each round someone made progress (created, released or took over a claim)
        mine = _new_holder(cell_id)
        if _create(path, mine):
            return Claim(path, mine, lease, took_over)
        current = read_holder(path)
        if current is None:
            continue  # released meanwhile: try again
        if not current.stale(lease):
            return current
        took_over = _take_over(path, current, lease) or took_over
    raise RuntimeError(f"could not claim {path}: it changed hands 100 times while this process tried")


def claim_cell(store: ResultStore, cell_id: str, lease_s: float | None = None) -> tuple[Claim | None, str]:
    """Claim a cell of ``store`` unless it is done: ``(claim, "run")`` when this process now holds it,
    ``(None, "done")`` when it has a valid record, ``(None, "elsewhere:<holder>")`` when another live process
    holds it. ``run_cell`` computes a cell only on ``"run"``, so only the claimer resumes its checkpoints."""
    if store.has(cell_id):
        return None, "done"
    got = try_claim(claims_dir(store.root), cell_id, lease_s)
    if isinstance(got, Holder):
        return None, f"elsewhere:{got.describe()}"
    if store.has(cell_id):  # its previous holder finished it between our two looks
        got.release()
        return None, "done"
    return got, "run"


def live_holder(directory: str | os.PathLike, cell_id: str, lease_s: float | None = None) -> Holder | None:
    """The holder of ``cell_id``'s claim if it is live, else None."""
    holder = read_holder(Path(directory) / f"{cell_id}.json")
    return holder if holder is not None and not holder.stale(lease_seconds(lease_s)) else None


def wait_released(
    directory: str | os.PathLike, cell_ids: Iterable[str], lease_s: float | None = None, poll_s: float = 2.0
) -> None:
    """Block until none of ``cell_ids`` has a live claim (released, or stale and so free to take over)."""
    waiting = set(cell_ids)
    while waiting:
        waiting = {cid for cid in waiting if live_holder(directory, cid, lease_s) is not None}
        if waiting:
            time.sleep(poll_s)


def remove_stale_graves(directory: str | os.PathLike, lease_s: float | None = None) -> list[Path]:
    """Remove claims a taker renamed aside and then died holding (older than the lease)."""
    lease, now, removed = lease_seconds(lease_s), time.time(), []
    for grave in Path(directory).glob(".*.stale"):
        try:
            if now - grave.stat().st_mtime > lease:
                grave.unlink()
                removed.append(grave)
        except FileNotFoundError:
            continue
    return removed


def _new_holder(cell_id: str) -> Holder:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Holder(cell_id, this_host(), os.getpid(), secrets.token_hex(8), started, 0.0)


def _create(path: Path, holder: Holder) -> bool:
    """Create the claim file with ``holder``'s content, atomically and only if there is none."""
    info = {k: getattr(holder, k) for k in ("cell_id", "host", "pid", "token", "started")}
    text = json.dumps(info, indent=1).encode()
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{this_host()}~{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.write(fd, text)
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        try:
            os.link(tmp, path)  # fails if the claim exists, complete content or none
            return True
        except FileExistsError:
            return False
        except OSError as error:  # a filesystem without hard links: exclusive create, then write
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        try:
            out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(out, "wb") as f:
            f.write(text)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _take_over(path: Path, stale: Holder, lease: float) -> bool:
    """Move the stale claim ``stale`` aside; True if this process removed it. If what was moved turns out
    to be a fresh claim (another taker won meanwhile), it is put back."""
    grave = path.with_name(f".{path.name}.{secrets.token_hex(8)}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return False  # another taker moved it first
    moved = read_holder(grave)
    if moved is not None and moved.token == stale.token and moved.stale(lease):
        grave.unlink(missing_ok=True)
        return True
    try:
        os.link(grave, path)  # give the live claim back (unless yet another claim exists now)
    except FileExistsError:
        pass
    grave.unlink(missing_ok=True)
    return False
