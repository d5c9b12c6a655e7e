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
from torch.utils.data import DataLoader

from stitching.bench.cache import ActivationCache, CacheFullError, CacheSettings, cache_key, torch_dtype
from stitching.bench.cell_config import BaseModel
from stitching.bench.data import build_datamodule, split_dataset
from stitching.bench.runtime import Runtime
from stitching.core.activations import ACTIVATION_BATCH_SIZE, ImageBatches, StreamedActivations, front_batches
from stitching.data.subset import dataset_targets, indices_hash
from stitching.nn import freeze
from stitching.zoo import load_model_with_info


def default_cache_dir() -> Path:
    return Path(os.environ.get("STITCHING_CACHE", Path.home() / ".cache" / "stitching"))


@dataclass
class CellContext:
    """Everything a cell reuses from earlier cells in the same process."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    memory_budget_gb: float | None = None
    """Activations held in memory (GiB); None: ``settings.memory_gb``."""
    cache_dtype: torch.dtype = torch.float32
    """Dtype of activations asked for without one (a cell asks for its config's ``cache_dtype``)."""
    persist_activations: bool | None = None
    """Keep every activation on disk; None: ``settings.persist``."""
    batch_size: int = ACTIVATION_BATCH_SIZE
    runtime: Runtime = field(default_factory=Runtime)
    """Devices (one, or several training each cell with DDP) and speed switches."""
    settings: CacheSettings = field(default_factory=CacheSettings.from_env)
    """Budgets and the activation path (``stitching bench --cache.*``, handed over in the environment)."""

    def __post_init__(self) -> None:
        self.speed = self.runtime.speed
        self.fabric = self.runtime.fabric()  # None on one device
        self.device = self.fabric.device if self.fabric else self.runtime.single_device()
        if self.memory_budget_gb is None:
            self.memory_budget_gb = self.settings.memory_gb
        if self.persist_activations is None:
            self.persist_activations = self.settings.persist
        self._caches: dict[torch.dtype, ActivationCache] = {}
        self.activations = self.cache(self.cache_dtype)
        self._datamodules: dict[str, Any] = {}
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self._labels: dict[str, torch.Tensor] = {}
        self._images: dict[str, ImageBatches] = {}

    def cache(self, dtype: torch.dtype) -> ActivationCache:
        """The activation cache of one dtype (each within the budgets)."""
        if dtype not in self._caches:
            self._caches[dtype] = ActivationCache(
                self.cache_dir / "activations", self.memory_budget_gb, dtype, self.persist_activations,
                self.settings.disk_gb,
            )  # fmt: skip
        return self._caches[dtype]

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

    def labels(self, spec: dict, split: str, subset: Subset | None = None) -> torch.Tensor:
        """The labels of a split (of the training subset, for ``train`` with ``subset``), read without
        decoding images where the dataset keeps them."""
        key = json.dumps([spec, split, subset], sort_keys=True)
        if key not in self._labels:
            dataset = split_dataset(self.datamodule(spec), split, *_subset_args(split, subset))
            self._labels[key] = torch.as_tensor(dataset_targets(dataset), dtype=torch.long)
        return self._labels[key]

    def subset_record(self, spec: dict, subset: Subset) -> dict[str, Any]:
        """The recorded draw of a training subset: images per class, seed, size and an index hash."""
        data = split_dataset(self.datamodule(spec), "train", *subset)
        per_class, seed = subset
        return {
            "per_class": per_class,
            "seed": seed,
            "images": len(data),
            "indices": indices_hash(data.indices),
        }

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

    def front_activations(
        self,
        identity: Any,
        front: nn.Module,
        dataset: dict,
        split: str,
        dtype: str = "float32",
        subset: Subset | None = None,
    ) -> torch.Tensor | StreamedActivations:
        """``front`` applied to every sample of a split (or of the training subset), computed once per
        (identity, dataset, split, dtype, subset) and cached when it fits the budgets; streamed (computed
        on demand, never stored) when it does not, or when the settings stream training splits."""
        datamodule = self.datamodule(dataset)
        data = split_dataset(datamodule, split, *_subset_args(split, subset))
        cache = self.cache(torch_dtype(dtype))
        key = cache_key(model=identity, dataset=dataset, split=split, dtype=str(cache.dtype))
        if split == "train" and subset is not None:
            key = cache_key(key=key, subset=subset)
        if len(data) == 0:
            raise ValueError(f"the {split} split of {dataset['class_path']} has no images")
        with torch.no_grad():
            sample_shape = tuple(front(data[0][0][None].to(self.device)).shape[1:])
        path = self.settings.path or "auto"
        nbytes = cache.nbytes(len(data), sample_shape)
        stream = path == "streamed" and split == "train"
        if not stream and not cache.holds(key) and cache.policy.where(nbytes) == "streamed":
            if path == "cached":
                raise CacheFullError(f"{split} split: {cache._full_message(nbytes)}")
            stream = True
        if stream:
            key = json.dumps([dataset, split, subset])
            if key not in self._images:  # decoding threads: the datamodule's loader workers
                self._images[key] = ImageBatches(data, getattr(datamodule, "num_workers", 0))
            images = self._images[key]
            return StreamedActivations(
                images, front, sample_shape, self.device, cache.dtype, self.speed.autocast
            )
        loader = DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=getattr(datamodule, "num_workers", 0),
            pin_memory=getattr(datamodule, "pin_memory", False),
        )

        def batches() -> Iterator[torch.Tensor]:
            for activation in front_batches(front, loader, self.device):
                yield activation.cpu()

        return cache.get(key, batches, len(data), sample_shape)


Subset = tuple[int, int]
"""A training subset: (images per class, seed of the draw)."""


def _subset_args(split: str, subset: Subset | None) -> tuple:
    return subset if split == "train" and subset is not None else ()
