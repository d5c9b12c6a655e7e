"""The plan before the work (issue 15): bytes and places per (model, cut, split) under the cache budgets,
front and back passes, the budget errors, cache dtypes, and the seeded training subset."""

import math

import numpy as np
import pytest
import torch

from stitching.bench.cache import ActivationCache, CacheFullError, CacheSettings
from stitching.bench.commands import bench_main
from stitching.bench.data import DatasetFacts
from stitching.bench.grid import expand_suite
from stitching.bench.plan import activation_shape, format_plan, make_plan
from stitching.bench.suite import suite_from_dict
from stitching.data.subset import class_counts, draw_subset

SIZES = {"train": 1000, "val": 100, "test": 200}
FACTS = DatasetFacts((3, 32, 32), SIZES, {"train": [100] * 10, "val": [10] * 10, "test": [20] * 10})


def _cells(**activations):
    suite = suite_from_dict(
        {
            "name": "p",
            "version": "1",
            "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {}},
            "models": {"r": {"name": "mini_resnet", "seeds": [0, 1]}},
            "pairs": {"mode": "same_arch", "include_self": False},
            "cuts": {"depths": [0.5]},
            "recipe": {"epochs": 3, "batch_size": 32},
            "controls": ["random_source"],
            "activations": activations,
        }
    )
    cells = expand_suite(suite)
    shapes = {}
    for c in cells:
        for name, cut in (
            (c.config.source.name, c.config.source_cut),
            (c.config.target.name, c.config.target_cut),
        ):
            shapes[(name, cut)] = activation_shape(name, cut, (3, 32, 32))
    return cells, shapes


def test_plan_counts_every_activation_once_with_its_real_shape_and_bytes():
    cells, shapes = _cells()
    plan = make_plan(cells, shapes, FACTS, CacheSettings(memory_gb=10))
    assert len(cells) == 2 and not plan.problems
    # per cell: source train/val/test, target train/test, random source train/val/test; the two cells share
    # their activations crosswise (r/0 is one's source and the other's target)
    (shape,) = set(shapes.values())
    assert len(shape) == 3  # a real (C, H, W) feature map from a forward of the untrained model
    by = {(a.model, a.split): a for a in plan.activations}
    assert by[("r/0:" + cells[0].config.source_cut, "train")].nbytes == 1000 * math.prod(shape) * 4
    assert {a.place for a in plan.activations} == {"memory"}
    assert all(a.front_passes == 1 for a in plan.activations)  # computed once, then reused
    assert plan.bytes_in("memory") == sum(a.samples * math.prod(shape) * 4 for a in plan.activations)
    text = format_plan(plan)
    assert "fits the budgets" in text and "no estimate" in text


def test_what_fits_neither_budget_is_streamed_or_refused_with_the_options():
    cells, shapes = _cells()
    (shape,) = set(shapes.values())
    train_bytes = 1000 * math.prod(shape) * 4
    tight = CacheSettings(memory_gb=0.6 * train_bytes / 2**30, disk_gb=0)
    auto = make_plan(cells, shapes, FACTS, tight)
    assert not auto.problems
    streamed = {(a.model, a.split) for a in auto.activations if a.place == "streamed"}
    assert {split for _, split in streamed} == {"train"}  # val and test fit in memory
    assert all(c.path == "streamed" for c in auto.cells)
    source_train = next(a for a in auto.activations if a.split == "train" and a.model.startswith("r/0"))
    # one cell streams r/0 as source (lstsq fit + 3 epochs), the other as target (2 lstsq fits: the adapter's
    # and the random-source control's)
    assert source_train.front_passes == (1 + 3) + 2
    refused = make_plan(
        cells, shapes, FACTS, CacheSettings(memory_gb=tight.memory_gb, disk_gb=0, path="cached")
    )
    (problem,) = refused.problems
    assert "fit neither budget" in problem and "bfloat16" in problem and "train_per_class" in problem


def test_cache_dtype_halves_the_bytes_and_a_subset_shrinks_the_training_split():
    cells, shapes = _cells()
    full = make_plan(cells, shapes, FACTS, CacheSettings(memory_gb=10))
    cells16, _ = _cells(dtype="bfloat16", train_per_class=20)
    half = make_plan(cells16, shapes, FACTS, CacheSettings(memory_gb=10))
    for a, b in zip(full.activations, half.activations, strict=True):
        assert b.dtype == "bfloat16"
        assert b.nbytes * 2 * (a.samples / b.samples) == a.nbytes
        assert b.samples == (200 if a.split == "train" else a.samples)
    assert cells16[0].cell_id != cells[0].cell_id  # the dtype and the subset are part of the cell


def test_plan_errors_before_any_work():
    cells, shapes = _cells(train_per_class=101)
    (problem,) = make_plan(cells, shapes, FACTS, CacheSettings()).problems
    assert "train_per_class: 101" in problem and "only 100 of class 0" in problem
    cells, shapes = _cells()
    one_batch = CacheSettings(memory_gb=1e-6)
    assert any(
        "cannot hold one training batch" in p for p in make_plan(cells, shapes, FACTS, one_batch).problems
    )
    empty = DatasetFacts((3, 32, 32), {**SIZES, "val": 0}, FACTS.class_counts)
    problems = make_plan(cells, shapes, empty, CacheSettings(path="streamed")).problems
    assert any("streaming was asked for, but the val split has no images" in p for p in problems)
    unknown = DatasetFacts((3, 32, 32), {}, {}, "data not here")
    assert any(
        "split sizes" in p for p in make_plan(cells, shapes, unknown, CacheSettings(path="streamed")).problems
    )


def test_dry_run_prints_the_plan_and_refuses_a_suite_over_budget(tmp_path, capsys, write_suite, monkeypatch):
    for name in CacheSettings().to_env():  # bench_main hands its settings on in the environment
        monkeypatch.setenv(name, "")
    suite = write_suite(tmp_path / "dry.yaml", controls=[], metrics=[])
    assert bench_main([str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "fits the budgets" in out and "resnet/0:" in out and "1,257" in out  # digits' training split
    suite = write_suite(tmp_path / "big.yaml", controls=[], metrics=[], activations={"path": "cached"})
    args = [str(suite), "--dry-run", "--results", str(tmp_path / "r"), "--cache.memory_gb", "0.001"]
    assert bench_main([*args, "--cache.disk_gb", "0"]) == 2
    assert "fit neither budget" in capsys.readouterr().out
    suite = write_suite(tmp_path / "sub.yaml", controls=[], metrics=[], activations={"train_per_class": 500})
    assert bench_main([str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    assert "train_per_class: 500 images per class" in capsys.readouterr().out


def test_subset_draw_is_seeded_exact_per_class_and_refuses_more_than_the_split():
    targets = np.repeat(np.arange(5), [30, 12, 40, 25, 12])
    a, b = draw_subset(targets, 10, seed=7), draw_subset(targets, 10, seed=7)
    assert np.array_equal(a, b) and np.array_equal(a, np.sort(a))
    assert not np.array_equal(a, draw_subset(targets, 10, seed=8))
    assert class_counts(targets[a], 5) == [10] * 5
    with pytest.raises(ValueError, match="only 12 of class 1"):
        draw_subset(targets, 13, seed=0)


def test_cache_settings_travel_in_the_environment():
    settings = CacheSettings(memory_gb=0.5, disk_gb=300, path="streamed", persist=True)
    assert CacheSettings.from_env(settings.to_env()) == settings
    assert CacheSettings.from_env({}) == CacheSettings()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_caches_in_memory_and_on_disk_and_the_disk_budget(tmp_path, dtype):
    x = torch.randn(40, 4, 3)
    batches = lambda: (x[i : i + 16] for i in range(0, 40, 16))  # noqa: E731
    in_memory = ActivationCache(None, memory_budget_gb=1, dtype=dtype).get("k", batches, 40, (4, 3))
    assert in_memory.dtype == dtype and torch.equal(in_memory, x.to(dtype))
    disk = ActivationCache(tmp_path, memory_budget_gb=0, dtype=dtype, disk_budget_gb=1)
    on_disk = disk.get("k", batches, 40, (4, 3))
    assert on_disk.dtype == dtype and torch.equal(on_disk, in_memory)
    assert (tmp_path / "k.npy").stat().st_size < x.numel() * 2 + 256  # two bytes an element, plus a header
    full = ActivationCache(tmp_path, memory_budget_gb=0, dtype=dtype, disk_budget_gb=x.numel() * 3 / 2**30)
    with pytest.raises(CacheFullError, match="fits neither the memory budget"):
        full.get("other", batches, 40, (4, 3))  # k.npy already takes most of the disk budget


def test_dataset_facts_come_from_the_folder_when_it_is_here_and_from_the_suite_when_not(tmp_path):
    from PIL import Image

    from stitching.bench.data import describe_dataset

    for split, per_class in (("train", [3, 2]), ("val", [1, 1])):
        for c, n in enumerate(per_class):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    spec = {
        "class_path": "stitching.data.ImageFolderDataModule",
        "init_args": {"root": str(tmp_path), "image_size": 24},
    }
    here = describe_dataset(spec)
    assert here.input_size == (3, 24, 24) and here.sizes == {"train": 5, "val": 2, "test": 2}
    assert here.class_counts["train"] == [3, 2] and here.num_classes == 2
    missing = {**spec, "init_args": {"root": str(tmp_path / "nowhere"), "model_name": "resnet50.a1_in1k"}}
    away = describe_dataset(missing, {"train": 10, "val": 4, "test": 4}, num_classes=2)
    assert away.input_size == (3, 224, 224) and away.sizes["train"] == 10 and "data not here" in away.note


def test_the_fit_path_draws_the_cells_training_subset():
    from stitching.bench.data import build_datamodule, split_dataset
    from stitching.data import CellDataModule

    spec = {"class_path": "stitching.data.DigitsDataModule", "init_args": {}}
    fit = CellDataModule(spec, train_per_class=5, subset_seed=2)
    fit.setup("fit")
    bench = split_dataset(build_datamodule(spec), "train", 5, 2)
    assert len(bench) == 50 and fit.eval_dataset("train").indices == bench.indices
    assert len(fit.train_dataloader().dataset) == 50


def test_the_estimate_comes_from_finished_cells_with_the_same_models_and_cuts():
    cells, shapes = _cells()
    record = {"cell_id": cells[0].cell_id, "config": cells[0].config.to_dict(), "timings": {"total": 90.0}}
    plan = make_plan(cells, shapes, FACTS, CacheSettings(memory_gb=10), [record], {cells[0].cell_id})
    done, pending = sorted(plan.cells, key=lambda c: not c.done)
    assert done.done and done.front_images == 0 and pending.estimate_s == 90.0 and plan.estimate_s == 90.0
    assert "estimate: 1.5 min (mean time of 1 finished cell(s)" in format_plan(plan)
    everything = make_plan(cells, shapes, FACTS, CacheSettings(), [record], {c.cell_id for c in cells})
    assert "nothing to run" in format_plan(everything) and {a.place for a in everything.activations} == {
        "done"
    }


def test_a_dry_run_plans_a_suite_whose_data_is_elsewhere(tmp_path, capsys, write_suite, monkeypatch):
    for name in CacheSettings().to_env():
        monkeypatch.setenv(name, "")
    dataset = {
        "class_path": "stitching.data.ImageFolderDataModule",
        "init_args": {"root": str(tmp_path / "imagenet"), "image_size": 32},
    }
    sizes = {
        "split_sizes": {"train": 5000, "val": 500, "test": 500},
        "num_classes": 10,
        "train_per_class": 100,
    }
    suite = write_suite(tmp_path / "away.yaml", dataset=dataset, controls=[], metrics=[], activations=sizes)
    assert bench_main([str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "data not here" in out and "1,000" in out and "fits the budgets" in out  # 100 per class x 10
    assert bench_main([str(suite), "--results", str(tmp_path / "r")]) == 2  # a real run needs the folder
    assert "no folder" in capsys.readouterr().err
