"""Per-process state shared by the cells a process runs: datamodules, base models, the activation cache.

Cells that share a (model, cut, split) activation find it here instead of recomputing it; this is what makes
the source front run once per dataset rather than once per adapter epoch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

from stitching.bench.cache import ActivationCache, cache_key
from stitching.bench.cell_config import BaseModel
from stitching.bench.data import build_datamodule, split_loader
from stitching.bench.runtime import Runtime
from stitching.core.activations import ACTIVATION_BATCH_SIZE, front_batches
from stitching.nn import freeze
from stitching.zoo import load_model_with_info


def default_cache_dir() -> Path:
    return Path(os.environ.get("STITCHING_CACHE", Path.home() / ".cache" / "stitching"))


@dataclass
class CellContext:
    """Everything a cell reuses from earlier cells in the same process."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    memory_budget_gb: float = 4.0
    cache_dtype: torch.dtype = torch.float32
    persist_activations: bool = False
    batch_size: int = ACTIVATION_BATCH_SIZE
    runtime: Runtime = field(default_factory=Runtime)
    """Devices (one, or several training each cell with DDP) and speed switches."""

    def __post_init__(self) -> None:
        self.speed = self.runtime.speed
        self.fabric = self.runtime.fabric()  # None on one device
        self.device = self.fabric.device if self.fabric else self.runtime.single_device()
        self.activations = ActivationCache(
            self.cache_dir / "activations", self.memory_budget_gb, self.cache_dtype, self.persist_activations
        )
        self._datamodules: dict[str, Any] = {}
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self._labels: dict[str, torch.Tensor] = {}

    @property
    def is_global_zero(self) -> bool:
        """True in the process that scores cells and writes their records."""
        return self.runtime.is_global_zero()

    @contextmanager
    def rank_zero_first(self) -> Iterator[None]:
        """With DDP: rank 0 runs the block first (training a base model, downloading data), then the rest."""
        if self.fabric is None:
            yield
        else:
            with self.fabric.rank_zero_first(local=False):
                yield

    def barrier(self) -> None:
        if self.fabric is not None:
            self.fabric.barrier()

    def datamodule(self, spec: dict) -> Any:
        key = json.dumps(spec, sort_keys=True)
        if key not in self._datamodules:
            self._datamodules[key] = build_datamodule(spec)
        return self._datamodules[key]

    def labels(self, spec: dict, split: str) -> torch.Tensor:
        key = json.dumps([spec, split], sort_keys=True)
        if key not in self._labels:
            loader = split_loader(self.datamodule(spec), split, self.batch_size)
            self._labels[key] = torch.cat([y for _, y in loader])
        return self._labels[key]

    def model(self, base: BaseModel, num_classes: int) -> tuple[nn.Module, dict]:
        """A frozen base model and what the model store knows of it (accuracy, training time)."""
        key = json.dumps([asdict(base), num_classes], sort_keys=True)
        if key not in self._models:
            model, info = load_model_with_info(base.source(), num_classes=num_classes)
            self._models[key] = (freeze(model.to(self.device)), info)
        return self._models[key]

    def random_model(self, name: str, seed: int, num_classes: int) -> nn.Module:
        """An untrained model of the same architecture: the random-source control."""
        from stitching.models import create_model

        key = json.dumps(["random", name, seed, num_classes])
        if key not in self._models:
            with isolate_rng():
                torch.manual_seed(seed)
                model = create_model(name, pretrained=False, num_classes=num_classes)
            self._models[key] = (freeze(model.to(self.device)), {})
        return self._models[key][0]

    def front_activations(self, identity: Any, front: nn.Module, dataset: dict, split: str) -> torch.Tensor:
        """``front`` applied to every sample of a split, computed once per (identity, dataset, split)."""
        loader = split_loader(self.datamodule(dataset), split, self.batch_size)
        key = cache_key(model=identity, dataset=dataset, split=split, dtype=str(self.cache_dtype))
        num_samples = len(loader.dataset)
        with torch.no_grad():
            first = front(next(iter(loader))[0][:1].to(self.device))

        def batches() -> Iterator[torch.Tensor]:
            for activation in front_batches(front, loader, self.device):
                yield activation.cpu()

        return self.activations.get(key, batches, num_samples, tuple(first.shape[1:]))
