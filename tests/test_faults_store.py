"""Fault injection on the results store: damaged and foreign files, non-finite numbers, edited suites,
leftovers of killed runs, a full disk, planted pickles. Each case ends in a clear message or a correct
result; nothing is lost (damaged files are moved aside, never deleted)."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stitching import _utils
from stitching._utils import DiskFullError, remove_stale_temporaries
from stitching.bench.cell_config import SuiteRef
from stitching.bench.leaderboard import leaderboard, records_to_frame, write_leaderboard
from stitching.bench.record import SCHEMA, make_record
from stitching.bench.store import ResultStore, StoreWarning


def config(seed=0, epochs=4, dataset="digits", checkpoint=None, samples=200):
    def side(key):
        return {"key": key, "name": "mini_resnet", "seed": seed, "train": "t.yaml", "checkpoint": checkpoint}

    return {
        "dataset": {"class_path": dataset}, "source": side("a"), "target": side("b"), "pair_kind": "cross",
        "source_cut": "layer1", "target_cut": "layer1", "source_depth": 0.5, "target_depth": 0.5,
        "adapter": {}, "init": "lstsq", "stitch_seed": seed, "objective": "task", "metric_samples": samples,
        "recipe": {"optimizer": "adamw", "lr": 1e-3, "epochs": epochs, "batch_size": 128},
    }  # fmt: skip


def add(store: ResultStore, cell_id: str, version="1", **metrics) -> dict:
    cell_config = metrics.pop("config", None) or config()
    cell = {"cell_id": cell_id, "suite": {"name": "faults", "version": version}, "config": cell_config}
    defaults = {"target_acc": 0.9, "stitched_acc": 0.8, "penalty": 0.1}
    record = make_record(cell, {**defaults, **metrics}, {"train": 1.0})
    store.write(record)
    return record


DAMAGED = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "not_json": lambda good: b"\x00\xff binary garbage \x89PNG",
    "a_list": lambda good: b"[1, 2, 3]",
    "not_a_record": lambda good: b'{"hello": "world"}',
    "foreign_schema": lambda good: good.replace(SCHEMA.encode(), b"stitching.cell/99"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_record_is_named_quarantined_and_recomputed(tmp_path, damage):
    store = ResultStore(tmp_path)
    add(store, "good")
    add(store, "bad")
    broken = DAMAGED[damage](store.path("bad").read_bytes())
    store.path("bad").write_bytes(broken)
    with pytest.warns(StoreWarning, match=r"cells/bad\.json: .*moved to .*quarantine/cells/bad\.json\."):
        assert store.finished_ids() == {"good"}  # the damaged cell counts as not done: it is recomputed
    (kept,) = (tmp_path / "quarantine" / "cells").iterdir()
    assert kept.read_bytes() == broken, "moved aside as it was, never deleted"
    assert not store.has("bad") and [r["cell_id"] for r in store.records()] == ["good"]
    add(store, "bad")  # the recomputed record
    assert store.finished_ids() == {"good", "bad"}


def test_leaderboard_and_pending_cells_read_past_damaged_files(tmp_path):
    from stitching.bench.runner import pending_cells

    store = ResultStore(tmp_path)
    for seed in (0, 1):
        add(store, f"ok{seed}", config=config(seed=seed))
    add(store, "torn")
    store.path("torn").write_text('{"schema": "stitching.cell/2", "cell_id": "to')  # a torn copy
    store.path("zero").write_text("")
    (store.cells_dir / "notes.txt").write_text("a foreign file that is not a record: left alone")
    with pytest.warns(StoreWarning) as caught:
        paths = write_leaderboard(tmp_path, plots=False)
    assert {Path(str(w.message).split(":")[0]).name for w in caught} == {"torn.json", "zero.json"}
    board = pd.read_csv(paths["leaderboard_csv"])
    assert list(board["n"]) == [2]
    cells = [SimpleNamespace(cell_id=c) for c in ("ok0", "ok1", "torn", "zero")]
    assert [c.cell_id for c in pending_cells(cells, store)] == ["torn", "zero"]
    assert (store.cells_dir / "notes.txt").exists()


def test_non_finite_numbers_are_stored_as_strict_json_and_read_back(tmp_path):
    store = ResultStore(tmp_path)
    record = add(store, "nan", stitched_acc=float("nan"), penalty=np.float32("nan"), agreement=None)
    record["training"] = {"epochs": [{"loss": float("inf")}, {"loss": -math.inf}]}
    store.write(record)
    text = store.path("nan").read_text()

    def refuse(constant):
        raise ValueError(f"bare {constant} in a record")

    stored = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN, Infinity
    assert stored["metrics"]["stitched_acc"] is None and stored["metrics"]["agreement"] is None
    assert stored["nonfinite"] == {
        "/metrics/stitched_acc": "nan", "/metrics/penalty": "nan",
        "/training/epochs/0/loss": "inf", "/training/epochs/1/loss": "-inf",
    }  # fmt: skip
    back = store.read("nan")  # restored exactly
    assert math.isnan(back["metrics"]["stitched_acc"]) and math.isnan(back["metrics"]["penalty"])
    assert back["training"]["epochs"] == [{"loss": math.inf}, {"loss": -math.inf}]
    assert back["metrics"]["agreement"] is None  # a null that was written as null stays one
    store.write(back)
    assert store.path("nan").read_text() == text, "round trip"
    add(store, "fine", config=config(seed=1), stitched_acc=0.7, agreement=0.5)
    row = leaderboard(records_to_frame(store.records())).iloc[0]
    assert row["n"] == 2 and row["stitched_acc_mean"] == pytest.approx(0.7), "NaN and null are missing"
    assert row["agreement_mean"] == pytest.approx(0.5)


def test_a_leaderboard_row_never_mixes_recipes_suite_versions_or_edited_settings(tmp_path):
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        template = f"ckpt/seed{seed}.pt"  # a checkpoint template names one file per seed: same setup
        add(store, f"e4-{seed}", config=config(seed=seed, checkpoint=template), stitched_acc=0.8)
        add(store, f"e8-{seed}", config=config(seed=seed, epochs=8, checkpoint=template), stitched_acc=0.6)
    add(store, "v2", version="2", stitched_acc=0.5)
    add(store, "samples", config=config(samples=500), stitched_acc=0.4)  # edited without a new version
    add(store, "dataset", config=config(dataset="other"), stitched_acc=0.3)
    board = leaderboard(records_to_frame(store.records()))
    by_mean = {round(r["stitched_acc_mean"], 2): r["n"] for _, r in board.iterrows()}
    assert by_mean == {0.8: 2, 0.6: 2, 0.5: 1, 0.4: 1, 0.3: 1}
    assert board["setup"].nunique() == 4  # the version is its own column


def test_leftovers_of_killed_runs_are_removed_and_live_writes_kept(tmp_path, monkeypatch):
    from stitching.bench.runner import clean_leftovers

    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path / "cache"))  # its activations and model store too

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    cells = tmp_path / "cells"
    cells.mkdir()
    host = _utils.this_host()
    killed = cells / f".abc.json.{host}~{dead_pid}.x1.tmp"
    live = cells / f".abd.json.{host}~{os.getpid()}.x2.tmp"
    foreign_old = tmp_path / "predictions" / ".abc.npz.elsewhere~1.x3.tmp"
    foreign_new = cells / ".abe.json.elsewhere~1.x4.tmp"
    unknown_old = tmp_path / "work" / "abc" / ".adapter.pt.x5.tmp"  # written by an older version
    for path in (killed, live, foreign_old, foreign_new, unknown_old):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    for path in (foreign_old, unknown_old):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    removed = clean_leftovers(tmp_path)
    assert set(removed) == {killed, foreign_old, unknown_old}
    assert live.exists() and foreign_new.exists()
    assert remove_stale_temporaries(cells) == [], "nothing else is stale"


def test_a_killed_base_model_training_leaves_nothing_the_next_one_keeps(tmp_path, monkeypatch):
    from stitching import zoo

    final = tmp_path / "zoo" / "0123456789abcdef"
    scratch = final.parent / f".tmp-{final.name}-k1ll3d"
    (scratch / "lightning_logs").mkdir(parents=True)
    final.mkdir()
    (final / f".model.ckpt.{_utils.this_host()}~999999.x.tmp").write_bytes(b"torn")
    other = final.parent / ".tmp-fedcba9876543210-live"  # another model's training: not ours to touch
    other.mkdir()
    zoo._remove_leftovers(final)
    assert not scratch.exists() and list(final.iterdir()) == [] and other.exists()
    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path))
    (final / "metrics.json").write_text("{}")  # stored: its lock is an orphan
    for key in (final.name, "fedcba9876543210"):
        (final.parent / f"{key}.lock").touch()
    assert zoo.remove_stored_locks() == [final.parent / f"{final.name}.lock"]  # the other may be held


def test_an_unknown_model_leaves_no_lock_in_the_model_store(tmp_path, monkeypatch):
    from stitching.models import UnknownModelError
    from stitching.zoo import ModelSource, get_trained

    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path))
    train = str(Path(__file__).parent / "data" / "train_tiny.yaml")
    with pytest.raises(UnknownModelError, match=r"unknown model 'mini_resnett'.*mini_resnet"):
        get_trained(ModelSource("mini_resnett", train=train))
    assert not list(tmp_path.rglob("*")), "nothing written to the store"


def fill_disk(monkeypatch) -> None:
    """From now on, every write of a file's bytes fails as on a full device."""

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)


def test_a_full_disk_is_said_with_the_file_and_what_was_kept(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    before = add(store, "abc")
    text = store.path("abc").read_text()
    fill_disk(monkeypatch)
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing .*abc\.json; kept: the prev"
    ):
        store.write({**before, "metrics": {"target_acc": 0.1}})
    with pytest.raises(DiskFullError, match=r"while writing .*new\.json; kept: nothing new"):
        store.write({**before, "cell_id": "new"})
    assert store.path("abc").read_text() == text and not store.path("new").exists()
    assert sorted(p.name for p in store.cells_dir.iterdir()) == ["abc.json"], "no temporary or 0-byte file"

    def no_inode(**kwargs):  # not even room for an empty file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_inode)
    with pytest.raises(DiskFullError, match=r"while writing .*other\.json; kept: nothing new"):
        store.write({**before, "cell_id": "other"})


def test_a_full_disk_while_writing_tables_keeps_the_previous_ones(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        add(store, f"c{seed}", config=config(seed=seed))
    write_leaderboard(tmp_path, plots=False)
    previous = (tmp_path / "cells.csv").read_text()
    add(store, "c2", config=config(seed=2))

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space)
    with pytest.raises(DiskFullError, match=r"while writing .*cells\.csv; kept: the previous cells\.csv"):
        write_leaderboard(tmp_path, plots=False)
    assert (tmp_path / "cells.csv").read_text() == previous
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_torch_write_errors_on_a_full_disk_are_said_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=4096))
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*adapter\.pt"):
        with _utils.atomic_path(tmp_path / "adapter.pt") as tmp:
            tmp.write_bytes(b"\x00" * 10)
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert not list(tmp_path.iterdir()), "no 0-byte adapter.tmp left behind"


def test_a_run_refuses_to_start_on_a_nearly_full_disk(tmp_path, monkeypatch):
    from stitching.bench import runner

    monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    with pytest.raises(DiskFullError, match="1 MiB free, a run needs at least 64 MiB; nothing was started"):
        runner.check_free_space(tmp_path / "results" / "suite")


def test_a_cell_that_cannot_be_recorded_on_a_full_disk_says_its_checkpoints_are_kept(tmp_path, monkeypatch):
    import stitching.bench.cell as cell_module

    work = tmp_path / "work" / "abc"
    work.mkdir(parents=True)
    (work / "adapter.pt").write_bytes(b"trained")

    class Scored:  # stands in for the cell's steps: scored, nothing to keep but the record
        def __init__(self, *args):
            self.metrics, self.extra, self.features, self.predictions = {"target_acc": 0.5}, {}, {}, None
            self.timer = SimpleNamespace(seconds={"train": 1.0})

        def score(self):
            pass

    monkeypatch.setattr(cell_module, "_CellRun", Scored)
    fill_disk(monkeypatch)
    cell = SimpleNamespace(cell_id="abc", suite=SuiteRef("s", "1"), config=SimpleNamespace(to_dict=dict))
    ctx = SimpleNamespace(is_global_zero=True, fabric=None, barrier=lambda: None)
    kept = r"cell abc is not recorded, its adapter checkpoints are kept \(.*adapter\.pt\)"
    with pytest.raises(DiskFullError, match=kept):
        cell_module.run_cell(cell, tmp_path, context=ctx)
    assert (work / "adapter.pt").read_bytes() == b"trained"
    assert not (tmp_path / "claims" / "abc.json").exists()


class Planted:
    """A pickle that, if ever loaded, leaves a marker file (what an attacker's payload would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def test_slurm_results_come_back_as_json_never_from_a_planted_pickle(tmp_path, monkeypatch):
    from submitit.core.utils import JobPaths

    from stitching.launch import slurm
    from stitching.launch.base import write_outcomes

    marker = tmp_path / "pwned"
    folder = tmp_path / "slurm" / "%j"
    jobs = [
        {"job_id": "41_0", "folder": str(folder), "cells": ["a"], "submitted": "x"},  # an old-style entry
        {"job_id": "41_1", "folder": str(folder), "cells": ["b", "c"], "submitted": "x",
         "outcomes": str(tmp_path / "slurm" / "outcomes" / "b.json")},
    ]  # fmt: skip
    for job in jobs:
        paths = JobPaths(folder, job_id=job["job_id"])
        for pkl in (paths.result_pickle, paths.submitted_pickle):
            pkl.parent.mkdir(parents=True, exist_ok=True)
            pkl.write_bytes(pickle.dumps((("success", Planted(marker)), Planted(marker))))
    slurm.JobLedger(tmp_path / slurm.JOBS_FILE).write(jobs)
    write_outcomes(
        jobs[1]["outcomes"], {"b": (True, {"metrics": {"x": 1.0}}), "c": (False, "Traceback: boom")}
    )
    monkeypatch.setattr(slurm, "squeue_states", lambda ids: {})  # every job has left the queue
    executor = slurm.SlurmExecutor(progress=False)
    outcomes = executor._wait(slurm.JobLedger(tmp_path / slurm.JOBS_FILE).read(), total=3)
    assert not marker.exists(), "a pickle from the results directory was loaded"
    assert outcomes["b"] == (True, {"metrics": {"x": 1.0}}) and outcomes["c"] == (False, "Traceback: boom")
    ok, reason = outcomes["a"]
    assert not ok and "without an outcome for this cell; log:" in reason and "41_0_0_log.err" in reason


def test_a_damaged_job_ledger_is_named_and_ignored(tmp_path):
    from stitching.launch import slurm

    (tmp_path / slurm.JOBS_FILE).write_text('{"jobs": [{"job_id": ')
    with pytest.warns(UserWarning, match=r"slurm_jobs\.json is not a job ledger"):
        assert slurm.JobLedger(tmp_path / slurm.JOBS_FILE).read() == []


def test_a_cluster_batch_writes_its_outcomes_as_json_after_each_cell(tmp_path):
    from stitching.launch.base import CellBatch, read_outcomes

    seen = []

    def fn(cell):
        seen.append(read_outcomes(tmp_path / "out.json"))  # what the poller sees mid-batch
        if cell["cell_id"] == "b":
            raise ValueError("b failed")
        return {"cell_id": cell["cell_id"], "value": float("nan")}

    batch = CellBatch(fn, [{"cell_id": "a"}, {"cell_id": "b"}])
    batch.outcome_file = str(tmp_path / "out.json")
    batch()
    assert seen[0] == {} and list(seen[1]) == ["a"] and math.isnan(seen[1]["a"][1]["value"])
    final = read_outcomes(tmp_path / "out.json")
    assert final["a"][0] is True and final["b"][0] is False and "ValueError: b failed" in final["b"][1]
