"""Streamed fronts (issue 15): a cell whose training activations are computed on the fly gives the cached
cell's adapter and accuracies, exactly (CPU, no augmentation: the training split has evaluation
preprocessing on both paths)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from stitching.bench.cache import CacheFullError, CacheSettings
from stitching.bench.cell import _CellRun
from stitching.bench.context import CellContext
from stitching.bench.grid import expand_suite
from stitching.bench.runtime import Runtime
from stitching.bench.suite import suite_from_dict
from stitching.core.activations import ImageBatches, StreamedActivations
from stitching.core.speed import Speed


def _cell(**activations):
    suite = suite_from_dict(
        {
            "name": "stream",
            "version": "1",
            "dataset": {
                "class_path": "stitching.data.DigitsDataModule",
                "init_args": {"val_fraction": 0.05, "test_fraction": 0.05, "image_size": 16},
            },
            "models": {"r": {"name": "mini_resnet", "seeds": [0, 1]}},
            "pairs": {"mode": "same_arch", "include_self": False},
            "cuts": {"depths": [0.5]},
            "recipe": {"epochs": 2, "batch_size": 16},
            "controls": ["random_source"],
            "activations": {"train_per_class": 6, "subset_seed": 3, **activations},
        }
    )
    return expand_suite(suite)[0]


def _run(cell, tmp_path: Path, path: str, **budgets) -> _CellRun:
    runtime = Runtime(
        accelerator="cpu", speed=Speed(fuse=True)
    )  # adapter + control in one pass: shared batches
    ctx = CellContext(
        cache_dir=tmp_path / path, runtime=runtime, settings=CacheSettings(path=path, **budgets)
    )
    run = _CellRun(cell.config, ctx, tmp_path / f"work-{path}")
    run.score()
    return run


def test_a_streamed_cell_gives_the_cached_cells_adapter_and_accuracies(tmp_path):
    cell = _cell()
    cached, streamed = _run(cell, tmp_path, "cached"), _run(cell, tmp_path, "streamed")
    assert isinstance(streamed.source.acts["train"], StreamedActivations)
    assert isinstance(streamed.target.acts["train"], StreamedActivations)
    assert isinstance(cached.source.acts["train"], torch.Tensor)
    assert not isinstance(streamed.source.acts["test"], StreamedActivations)  # what fits is still cached
    assert (
        cached.extra["activations"]["path"] == "cached"
        and streamed.extra["activations"]["path"] == "streamed"
    )
    subset = streamed.extra["activations"]["train_subset"]
    assert subset["images"] == 60 and subset == cached.extra["activations"]["train_subset"]
    assert len(cached.labels["train"]) == 60
    assert cached.metrics == streamed.metrics
    for name, value in cached.adapter.state_dict().items():
        assert torch.equal(value, streamed.adapter.state_dict()[name]), name
    for a, b in zip(cached.extra["training"]["epochs"], streamed.extra["training"]["epochs"], strict=True):
        assert (a["loss"], a["val_acc"]) == (b["loss"], b["val_acc"])


def test_auto_streams_only_what_does_not_fit_and_cached_refuses_it(tmp_path):
    cell = _cell()
    # digits at 16 px, this cut: train 60 x 32x8x8 floats = 492 KB, val/test 90 each = 737 KB; a batch 131 KB
    budgets = {"memory_gb": 400 / 2**20, "disk_gb": 0.0}
    ctx = CellContext(
        cache_dir=tmp_path / "a",
        runtime=Runtime(accelerator="cpu"),
        settings=CacheSettings(path="auto", **budgets),
    )
    run = _CellRun(cell.config, ctx, tmp_path / "w")
    run.load()
    assert all(isinstance(run.source.acts[s], StreamedActivations) for s in ("train", "val", "test"))
    assert run.extra["activations"]["path"] == "streamed"
    ctx = CellContext(
        cache_dir=tmp_path / "c",
        runtime=Runtime(accelerator="cpu"),
        settings=CacheSettings(path="cached", **budgets),
    )
    with pytest.raises(CacheFullError, match="fits neither the memory budget"):
        _CellRun(cell.config, ctx, tmp_path / "w2").load()


class _Counted(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.x, self.reads = torch.randn(n, 3, 4, 4), 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], 0


def test_fronts_that_stream_one_split_share_each_batch_of_images():
    data = _Counted(20)
    images = ImageBatches(data)
    a = StreamedActivations(images, nn.Conv2d(3, 5, 1), (5, 4, 4), "cpu")
    b = StreamedActivations(images, nn.Flatten(), (48,), "cpu")
    idx = torch.tensor([3, 1, 7])
    assert torch.equal(a[idx], a.front(data.x[idx]).detach()) and torch.equal(b[idx], data.x[idx].flatten(1))
    assert data.reads == 3  # one load for both fronts
    assert a[2:4].shape == (2, 5, 4, 4) and len(a) == 20 and a.shape == (20, 5, 4, 4)
