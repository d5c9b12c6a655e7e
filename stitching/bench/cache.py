"""Activation cache: each (model, cut, dataset split) is computed once and reused by every cell needing it.

Entries live in memory while they fit a byte budget (least recently used first out); an entry larger than
that is written to a memory-mapped ``.npy`` file under the cache directory instead, so a cache far larger
than RAM (ImageNet validation at 256x14x14 in float16 is about 5 GB) still works, up to a disk budget. With
``persist`` every entry is also kept on disk, so later processes (a re-run, other SLURM jobs) reuse it. An
entry that fits neither budget is not cached: its front runs on the fly (streamed, see
:class:`stitching.core.activations.StreamedActivations`). :class:`CachePolicy` makes that choice, for the
cache at run time and for the plan (:mod:`stitching.bench.plan`) before anything runs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from stitching._utils import atomic_path, stable_hash

CacheDtype = Literal["float32", "bfloat16", "float16"]
"""How cached activations are stored: float32, or half the bytes in bfloat16 / float16 (part of a cell's
config: rounding the activations can move results)."""
CACHE_DTYPES: tuple[str, ...] = get_args(CacheDtype)
# numpy has no bfloat16: its files hold the raw 16-bit words, viewed as bfloat16 by torch
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}
ActivationPath = Literal["auto", "cached", "streamed"]
"""``auto``: cache what fits the budgets, stream the rest; ``cached``: refuse a suite that does not fit;
``streamed``: run the fronts on the fly for every training split."""
Place = Literal["memory", "disk", "streamed"]


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :data:`CacheDtype` name."""
    if name not in CACHE_DTYPES:
        raise ValueError(f"unknown cache dtype {name!r}; valid: {', '.join(CACHE_DTYPES)}")
    return getattr(torch, name)


@dataclass
class CacheSettings:
    """Where cached activations may go (``stitching bench --cache.*``): process settings, not part of a cell.

    The command line hands them to every process that runs cells (local workers, SLURM jobs) through the
    environment (``STITCHING_CACHE_<FIELD>``), which :meth:`from_env` reads.
    """

    memory_gb: float = 4.0
    """Activations held in memory (GiB); a larger one goes to disk."""
    disk_gb: float | None = None
    """Activations memory-mapped under the cache directory (GiB, files of other runs included); ``None``: no
    limit. An activation that fits neither budget is streamed (its front runs on the fly)."""
    path: ActivationPath | None = None
    """``auto``: stream what does not fit; ``cached``: refuse a suite that does not fit; ``streamed``: stream
    every training split; ``None``: the suite's ``activations.path`` (default ``auto``)."""
    persist: bool = False
    """Also keep every activation on disk, for later runs and other jobs."""

    def __post_init__(self) -> None:
        if self.path is not None and self.path not in get_args(ActivationPath):
            raise ValueError(f"cache path {self.path!r}; valid: {', '.join(get_args(ActivationPath))}")
        if self.memory_gb < 0 or (self.disk_gb is not None and self.disk_gb < 0):
            raise ValueError(
                f"cache budgets must be >= 0 GiB, got memory {self.memory_gb}, disk {self.disk_gb}"
            )

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these settings to the processes that run cells."""
        return {f"STITCHING_CACHE_{k.upper()}": "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CacheSettings:
        """The settings in ``environ`` (default ``os.environ``); unset variables keep the defaults."""
        environ = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"STITCHING_CACHE_{f.name.upper()}")
            if raw is None:
                continue
            if f.name == "path":
                kwargs[f.name] = raw or None
            elif f.name == "persist":
                kwargs[f.name] = raw.lower() in ("1", "true", "yes", "on")
            else:
                kwargs[f.name] = float(raw) if raw else None
        return cls(**kwargs)


def cache_key(**parts: Any) -> str:
    """A stable hex key for a JSON-able description of an activation."""
    return stable_hash(parts, 20)


class CachePolicy:
    """Where each new activation goes, given the budgets: memory (least recently used out), disk, or
    nowhere (streamed). Book-keeping only: it holds sizes, never tensors."""

    def __init__(
        self,
        memory_bytes: int,
        disk_bytes: int | None,
        has_directory: bool,
        persist: bool,
        disk_used: int = 0,
    ) -> None:
        self.memory_budget, self.disk_budget = memory_bytes, disk_bytes
        self.has_directory, self.persist = has_directory, persist
        self.in_memory: OrderedDict[str, int] = OrderedDict()
        self.on_disk: dict[str, int] = {}
        self.disk_used = disk_used

    def where(self, nbytes: int) -> Place:
        """Where a new activation of ``nbytes`` would go (nothing is recorded)."""
        if nbytes <= self.memory_budget and not self.persist:
            return "memory"
        if self.has_directory and (self.disk_budget is None or self.disk_used + nbytes <= self.disk_budget):
            return "disk"
        return "streamed"

    def lookup(self, key: str) -> Place | None:
        """Where ``key`` is held (and mark it recently used), or None."""
        if key in self.in_memory:
            self.in_memory.move_to_end(key)
            return "memory"
        return "disk" if key in self.on_disk else None

    def add(self, key: str, nbytes: int) -> tuple[Place, list[str]]:
        """Place a new activation; returns where, and the keys evicted from memory to make room."""
        place = self.where(nbytes)
        evicted = []
        if place == "memory":
            self.in_memory[key] = nbytes
            while sum(self.in_memory.values()) > self.memory_budget and len(self.in_memory) > 1:
                evicted.append(self.in_memory.popitem(last=False)[0])
        elif place == "disk":
            self.on_disk[key] = nbytes
            self.disk_used += nbytes
        return place, evicted


class CacheFullError(MemoryError):
    """An activation fits neither the memory nor the disk budget."""


class ActivationCache:
    """Computed-once tensors keyed by a description, within a memory budget, spilling to disk beyond it."""

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        memory_budget_gb: float = 4.0,
        dtype: torch.dtype = torch.float32,
        persist: bool = False,
        disk_budget_gb: float | None = None,
    ) -> None:
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"cache dtype must be torch.float32, bfloat16 or float16, got {dtype}")
        self.directory = Path(directory) if directory else None
        self.budget = int(memory_budget_gb * 2**30)
        self.dtype = dtype
        self.persist = persist
        disk_budget = None if disk_budget_gb is None else int(disk_budget_gb * 2**30)
        self.policy = CachePolicy(
            self.budget, disk_budget, self.directory is not None, persist, self._disk_used()
        )
        self._tensors: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _disk_used(self) -> int:
        if self.directory is None or not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("*.npy"))

    @property
    def memory_bytes(self) -> int:
        return sum(self.policy.in_memory.values())

    def nbytes(self, num_samples: int, sample_shape: tuple[int, ...]) -> int:
        """Bytes of an activation of ``num_samples`` samples of ``sample_shape`` in the cache's dtype."""
        return num_samples * int(np.prod(sample_shape)) * torch.empty((), dtype=self.dtype).element_size()

    def holds(self, key: str) -> bool:
        """True when ``key`` is in memory or on disk (no computing needed)."""
        on_disk = self._disk_path(key)
        return key in self._tensors or (on_disk is not None and on_disk.exists())

    def get(
        self,
        key: str,
        compute: Callable[[], Iterable[torch.Tensor]],
        num_samples: int,
        sample_shape: tuple[int, ...],
    ) -> torch.Tensor:
        """The cached tensor for ``key``, else the concatenation of the batches ``compute()`` yields."""
        if key in self._tensors:
            self.hits += 1
            self.policy.lookup(key)
            return self._tensors[key]
        on_disk = self._disk_path(key)
        if on_disk is not None and on_disk.exists():
            self.hits += 1
            self.policy.on_disk.setdefault(key, 0)  # already counted in the disk usage
            return self._keep(key, _load_memmap(on_disk, self.dtype))
        self.misses += 1
        nbytes = self.nbytes(num_samples, sample_shape)
        place = self.policy.where(nbytes)
        if place == "streamed":
            raise CacheFullError(self._full_message(nbytes))
        if place == "memory":
            out = torch.empty((num_samples, *sample_shape), dtype=self.dtype)
            _fill(out, compute(), num_samples)
        else:
            out = self._write_memmap(key, compute, num_samples, sample_shape)
        _, evicted = self.policy.add(key, nbytes)
        for old in evicted:
            self._tensors.pop(old, None)
        return self._keep(key, out)

    def _full_message(self, nbytes: int) -> str:
        gib, budget = 2**30, self.budget / 2**30
        if self.directory is None:
            return (
                f"activation of {nbytes / gib:.1f} GiB exceeds the cache budget of {budget:.1f} GiB and no "
                "cache directory is set; set one to spill to disk"
            )
        left = (self.policy.disk_budget - self.policy.disk_used) / gib
        return (
            f"activation of {nbytes / gib:.1f} GiB fits neither the memory budget ({budget:.1f} GiB) nor "
            f"what is left of the disk budget ({left:.1f} GiB); stream it (--cache.path auto), raise "
            "--cache.disk_gb, or use a cheaper cache dtype or a training subset"
        )

    def _keep(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        self._tensors[key] = tensor
        return tensor

    def _disk_path(self, key: str) -> Path | None:
        return self.directory / f"{key}.npy" if self.directory else None

    def _write_memmap(self, key, compute, num_samples, sample_shape) -> torch.Tensor:
        with atomic_path(self._disk_path(key)) as tmp:  # concurrent jobs never read a partial file
            array = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=_NUMPY_DTYPES[self.dtype], shape=(num_samples, *sample_shape)
            )
            _fill(_as_torch(array, self.dtype), compute(), num_samples)
            array.flush()
            del array
        return _load_memmap(self._disk_path(key), self.dtype)


def _as_torch(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


def _load_memmap(path: Path, dtype: torch.dtype) -> torch.Tensor:
    # copy-on-write mapping: a writable view for torch, pages read lazily, the file never modified
    return _as_torch(np.load(path, mmap_mode="c"), dtype)


def _fill(out: torch.Tensor, batches: Iterable[torch.Tensor], num_samples: int) -> None:
    start = 0
    for batch in batches:
        out[start : start + len(batch)] = batch.to(out.dtype)
        start += len(batch)
    if start != num_samples:
        raise RuntimeError(f"activation producer yielded {start} samples, expected {num_samples}")
