"""Progress that tells the truth: base models are trained first under their own bar, then the cells bar
ticks once per finished cell (not once per group), so its time per cell holds no base-model training."""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace

import pytest

from stitching.bench import runner
from stitching.bench.cell_config import BaseModel
from stitching.launch import InlineExecutor, LocalExecutor, RunReport
from stitching.launch import local as local_executors
from stitching.launch.base import CellBatch

Base = BaseModel  # the runner reads a cell's base models


def _cell(i: int, source: Base, target: Base, cut: str = "layer1") -> SimpleNamespace:
    config = SimpleNamespace(source=source, target=target, source_cut=cut, target_cut=cut)
    return SimpleNamespace(cell_id=f"cell{i}", config=config)


RESNET0 = Base("resnet", "mini_resnet", 0, "configs/train/mini_resnet.yaml")
RESNET1 = Base("resnet", "mini_resnet", 1, "configs/train/mini_resnet.yaml")
VIT0 = Base("vit", "mini_vit", 0, "configs/train/mini_vit.yaml")  # already in the store
RANDOM = Base("random", "mini_resnet", 0)  # no train config: nothing to train

CELLS = [
    _cell(0, RESNET0, RESNET1),
    _cell(1, RESNET1, RESNET0),  # the same two models again
    _cell(2, VIT0, RESNET0),
    _cell(3, RANDOM, RESNET1),
]


@pytest.fixture
def fake_store(monkeypatch):
    """The runner's view of the model store: ``mini_vit`` is stored; training records the order."""
    trained: list[tuple[str, int]] = []
    monkeypatch.setattr(runner, "is_stored", lambda s: s.name == "mini_vit" or (s.name, s.seed) in trained)
    monkeypatch.setattr(runner, "get_trained", lambda s: trained.append((s.name, s.seed)))
    return trained


def test_base_models_to_train_are_distinct_missing_and_trainable(fake_store):
    missing = runner.base_models_to_train(CELLS)
    assert [(s.name, s.seed) for s in missing] == [("mini_resnet", 0), ("mini_resnet", 1)]
    as_dicts = [{"config": {"source": vars(c.config.source), "target": vars(c.config.target)}} for c in CELLS]
    assert runner.base_models_to_train(as_dicts) == missing  # the records' dict form reads the same


def test_base_models_bar_ticks_once_per_model(fake_store, capsys):
    assert [(s.name, s.seed) for s in runner.train_base_models(CELLS)] == fake_store
    err = capsys.readouterr().err
    assert "base models" in err and "2/2" in err and "3/3" not in err
    assert runner.train_base_models(CELLS) == []  # all stored now: no bar at all
    assert "base models" not in capsys.readouterr().err


class RecordingExecutor:
    """Records what the store had trained when the cells started."""

    name = "inline"
    progress = False

    def __init__(self, trained: list) -> None:
        self.trained = trained
        self.trained_at_start: list | None = None

    def run(self, cells, fn, **kwargs) -> RunReport:
        self.trained_at_start = list(self.trained)
        return RunReport()


def test_run_suite_trains_base_models_before_any_cell(fake_store, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "load_suite", lambda suite: SimpleNamespace(name="toy", version="1"))
    executor = RecordingExecutor(fake_store)
    runner.run_suite("toy.yaml", tmp_path, executor=executor, cells=CELLS)
    assert sorted(executor.trained_at_start) == [("mini_resnet", 0), ("mini_resnet", 1)]


def test_slurm_leaves_base_models_to_the_jobs(fake_store, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "load_suite", lambda suite: SimpleNamespace(name="toy", version="1"))
    executor = RecordingExecutor(fake_store)
    executor.name = "slurm"
    runner.run_suite("toy.yaml", tmp_path, executor=executor, cells=CELLS)
    assert executor.trained_at_start == [] and fake_store == []


def _cell_fn(cell):
    if cell["cell_id"] == "bad":
        raise ValueError("this cell fails")
    time.sleep(cell.get("seconds", 0.05))
    return cell["cell_id"]


@pytest.fixture
def bar_updates(monkeypatch):
    """The cells bar's ``update`` calls, as (update, finished cells at that moment)."""
    updates: list[int] = []

    class Bar:
        n = 0

        def update(self, k: int) -> None:
            updates.append(k)
            self.n += k

    @contextlib.contextmanager
    def cells_bar(total, desc="cells", enabled=True):
        yield Bar()

    monkeypatch.setattr(local_executors, "cells_bar", cells_bar)
    return updates


def test_a_batch_reports_each_cell_as_it_finishes():
    told = []
    cells = [{"cell_id": "a"}, {"cell_id": "bad"}, {"cell_id": "c"}]
    batch = CellBatch(_cell_fn, cells, on_cell=lambda cid, ok: told.append((cid, ok)))
    outcomes = batch()
    assert told == [("a", True), ("bad", False), ("c", True)]
    assert outcomes["a"] == (True, "a") and outcomes["bad"][0] is False


def test_inline_bar_ticks_per_cell_within_a_group(bar_updates):
    cells = [{"cell_id": f"c{i}"} for i in range(3)]
    report = InlineExecutor().run(cells, _cell_fn, group_key=lambda c: "one group")
    assert report.ok and bar_updates == [1, 1, 1]


@pytest.mark.slow  # a spawned worker imports the harness: about 15 s on 2 shared cores
def test_local_bar_ticks_per_cell_within_a_group(bar_updates):
    cells = [{"cell_id": f"c{i}", "seconds": 0.6} for i in range(4)]  # longer than the 0.5 s poll
    report = LocalExecutor(workers=1).run(cells, _cell_fn, group_key=lambda c: "one group")
    assert report.ok and sum(bar_updates) == 4
    assert len([k for k in bar_updates if k]) > 1  # not a single jump of 4 when the group ends
