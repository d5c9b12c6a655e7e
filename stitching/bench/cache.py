"""Activation cache: each (model, cut, dataset split) is computed once and reused by every cell needing it.

Entries live in memory while they fit a byte budget (least recently used first out); an entry larger than
what is left is written to a memory-mapped ``.npy`` file under the cache directory instead, so a cache far
larger than RAM (ImageNet validation at 256x14x14 in float16 is about 5 GB) still works. With ``persist``
every entry is also kept on disk, so later processes (a re-run, other SLURM jobs) reuse it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stitching._utils import atomic_path, stable_hash

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


def cache_key(**parts: Any) -> str:
    """A stable hex key for a JSON-able description of an activation."""
    return stable_hash(parts, 20)


class ActivationCache:
    """Computed-once tensors keyed by a description, within a memory budget, spilling to disk beyond it."""

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        memory_budget_gb: float = 4.0,
        dtype: torch.dtype = torch.float32,
        persist: bool = False,
    ) -> None:
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"cache dtype must be torch.float32 or torch.float16, got {dtype}")
        self.directory = Path(directory) if directory else None
        self.budget = int(memory_budget_gb * 2**30)
        self.dtype = dtype
        self.persist = persist
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._on_disk: set[str] = set()
        self.hits = 0
        self.misses = 0

    @property
    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for k, t in self._memory.items() if k not in self._on_disk)

    def get(
        self,
        key: str,
        compute: Callable[[], Iterable[torch.Tensor]],
        num_samples: int,
        sample_shape: tuple[int, ...],
    ) -> torch.Tensor:
        """The cached tensor for ``key``, else the concatenation of the batches ``compute()`` yields."""
        if key in self._memory:
            self.hits += 1
            self._memory.move_to_end(key)
            return self._memory[key]
        on_disk = self._disk_path(key)
        if on_disk is not None and on_disk.exists():
            self.hits += 1
            return self._remember(key, _load_memmap(on_disk), on_disk=True)
        self.misses += 1
        nbytes = num_samples * int(np.prod(sample_shape)) * torch.empty((), dtype=self.dtype).element_size()
        if nbytes <= self.budget and not self.persist:
            out = torch.empty((num_samples, *sample_shape), dtype=self.dtype)
            _fill(out, compute(), num_samples)
            return self._remember(key, out)
        if self.directory is None:
            raise MemoryError(
                f"activation of {nbytes / 2**30:.1f} GiB exceeds the cache budget of "
                f"{self.budget / 2**30:.1f} GiB and no cache directory is set; set one to spill to disk"
            )
        return self._remember(key, self._write_memmap(key, compute, num_samples, sample_shape), on_disk=True)

    def _remember(self, key: str, tensor: torch.Tensor, on_disk: bool = False) -> torch.Tensor:
        self._memory[key] = tensor
        if on_disk:  # memory-mapped: the OS pages it in and out, it costs no budget
            self._on_disk.add(key)
            return tensor
        self._memory.move_to_end(key)
        while self.memory_bytes > self.budget and len(self._memory) > 1:
            evicted, _ = self._memory.popitem(last=False)
            self._on_disk.discard(evicted)
        return tensor

    def _disk_path(self, key: str) -> Path | None:
        return self.directory / f"{key}.npy" if self.directory else None

    def _write_memmap(self, key, compute, num_samples, sample_shape) -> torch.Tensor:
        with atomic_path(self._disk_path(key)) as tmp:  # concurrent jobs never read a partial file
            array = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=_NUMPY_DTYPES[self.dtype], shape=(num_samples, *sample_shape)
            )
            _fill(torch.from_numpy(array), compute(), num_samples)
            array.flush()
            del array
        return _load_memmap(self._disk_path(key))


def _load_memmap(path: Path) -> torch.Tensor:
    # copy-on-write mapping: a writable view for torch, pages read lazily, the file never modified
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _fill(out: torch.Tensor, batches: Iterable[torch.Tensor], num_samples: int) -> None:
    start = 0
    for batch in batches:
        out[start : start + len(batch)] = batch.to(out.dtype)
        start += len(batch)
    if start != num_samples:
        raise RuntimeError(f"activation producer yielded {start} samples, expected {num_samples}")
