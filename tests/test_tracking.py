"""W&B tracking, offline: what is logged is read back from the ``.wandb`` record stream and the table JSON
and checked against the results store. Nothing is sent anywhere."""

from __future__ import annotations

import argparse
import itertools
import math
import os

import numpy as np
import pandas as pd
import pytest
import wandb
from PIL import Image
from wandb_offline import CorruptRunFile, offline_runs, read_offline_run, read_wandb_records

from stitching.bench.cell_config import Cell, CellConfig, SuiteRef
from stitching.bench.leaderboard import leaderboard, records_to_frame
from stitching.bench.plots import write_plots
from stitching.bench.record import make_record
from stitching.bench.store import ResultStore
from stitching.tracking import (
    cell_run_id,
    leaderboard_from_wandb,
    log_cell_record,
    log_cells_to_wandb,
    log_leaderboard_run,
    record_from_run,
    records_from_wandb,
    resolve_mode,
    suite_group,
    sweep_config,
    sweep_main,
)

SUITE = {"name": "toy", "version": "2"}


def synthetic_records(suite=SUITE, seed=0) -> list[dict]:
    """Eight cells: a same-arch and a cross-arch pair, two depths, two stitch seeds; seeded metrics."""
    rng = np.random.default_rng(seed)
    records = []
    pairs = [
        ("resnet", "mini_resnet", "resnet", 1, "same_arch"),
        ("resnet", "mini_resnet", "vit", 0, "cross_arch"),
    ]
    cuts = {"resnet": [("layer1", 0.25), ("layer2", 0.5)], "vit": [("blocks.1", 0.25), ("blocks.3", 0.5)]}
    for (src, src_name, tgt, tgt_seed, kind), depth, stitch_seed in itertools.product(pairs, (0, 1), (0, 1)):
        config = {
            "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"split_seed": 0}},
            "source": {
                "key": src,
                "name": src_name,
                "seed": 0,
                "train": None,
                "pretrained": False,
                "checkpoint": None,
            },
            "target": {
                "key": tgt,
                "name": f"mini_{tgt}",
                "seed": tgt_seed,
                "train": None,
                "pretrained": False,
                "checkpoint": None,
            },
            "pair_kind": kind,
            "source_cut": cuts[src][depth][0],
            "target_cut": cuts[tgt][depth][0],
            "source_depth": cuts[src][depth][1],
            "target_depth": cuts[tgt][depth][1],
            "adapter": {"norm": "bn"},
            "init": "lstsq",
            "stitch_seed": stitch_seed,
            "recipe": {"epochs": 2, "lr": 0.001},
        }
        target_acc, stitched = rng.uniform(0.9, 1.0), rng.uniform(0.5, 0.95)
        metrics = {
            "target_acc": target_acc,
            "source_acc": rng.uniform(0.9, 1.0),
            "lstsq_acc": rng.uniform(0.4, 0.9),
            "stitched_acc": stitched,
            "penalty": target_acc - stitched,
            "control_penalty": rng.uniform(0.3, 0.8),
            "agreement": rng.uniform(0.5, 1.0),
            "linear_cka": rng.uniform(0.0, 1.0),
        }
        resolved = CellConfig.from_dict(config)  # as the grid resolves it: defaults filled in, id from all
        cell = {"cell_id": resolved.cell_id(), "suite": dict(suite), "config": resolved.to_dict()}
        records.append(
            make_record(cell, metrics, {"train": rng.uniform(1, 3), "eval": 0.5}, adapter_params=1088)
        )
    return records


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "toy"
    s = ResultStore(root)
    for r in synthetic_records():
        s.write(r)
    return s


@pytest.fixture(scope="module")
def logged(store, tmp_path_factory):
    """Log the store once, offline, and read every run back from disk."""
    wandb_dir = tmp_path_factory.mktemp("wandb")
    # Plots are checked on their own below: they depend on stitching.bench.plots.
    paths = log_cells_to_wandb(
        store.root, project="stitching-test", mode="offline", dir=wandb_dir, plots=False
    )
    runs = offline_runs(wandb_dir)
    return paths, runs, wandb_dir


def by_job(runs, job_type):
    return [r for r in runs if r.job_type == job_type]


# ---- the record stream reader ----------------------------------------------------------------------------


def test_reader_checks_header_and_checksums(logged, tmp_path):
    _, runs, _ = logged
    stream = next(runs[0].dir.glob("run-*.wandb"))
    kinds = [r.WhichOneof("record_type") for r in read_wandb_records(stream)]
    assert kinds[0] == "header" and "run" in kinds and kinds[-1] == "exit"
    data = bytearray(stream.read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload
    broken = tmp_path / "run-broken.wandb"
    broken.write_bytes(bytes(data))
    with pytest.raises(CorruptRunFile, match="checksum"):
        list(read_wandb_records(broken))
    (tmp_path / "run-not.wandb").write_bytes(b"PK\x03\x04 not a wandb file")
    with pytest.raises(CorruptRunFile, match="not a W&B run file"):
        list(read_wandb_records(tmp_path / "run-not.wandb"))


def test_reader_reassembles_records_split_across_blocks(tmp_path):
    """A value far larger than one 32 KiB block is written as FIRST/MIDDLE/LAST chunks and must come back."""
    big = "".join(f"{i:06d}" for i in range(20_000))  # 120 kB
    run = wandb.init(
        project="stitching-test", mode="offline", dir=tmp_path, id="bigsummary", reinit="create_new"
    )
    run.summary["big"] = big
    run.summary["after"] = 1.5
    run.finish()
    (back,) = offline_runs(tmp_path)
    assert back.id == "bigsummary"
    assert back.summary["big"] == big and back.summary["after"] == 1.5


# ---- one run per cell ------------------------------------------------------------------------------------


def test_one_finished_run_per_cell_with_record_config_and_metrics(store, logged):
    paths, runs, _ = logged
    records = {r["cell_id"]: r for r in store.records()}
    cells = by_job(runs, "cell")
    assert len(cells) == len(records) == 8
    assert len(paths) == len(records) + 1
    for run in cells:
        record = records[run.config["cell_id"]]
        assert run.id == cell_run_id(record)
        assert run.group == suite_group(SUITE) == "toy-v2"
        assert run.exit_code == 0  # finished before the next cell started
        c = record["config"]
        assert {
            f"source:{c['source']['key']}",
            f"target:{c['target']['key']}",
            c["pair_kind"],
            f"source_cut:{c['source_cut']}",
            f"target_cut:{c['target_cut']}",
        } <= set(run.tags)
        assert run.config == {**c, "cell_id": record["cell_id"], "suite": SUITE}
        metrics = {k: run.summary[k] for k in record["metrics"]}
        assert metrics == record["metrics"]  # JSON round trip of float64: exact
        assert run.summary["adapter_params"] == record["adapter_params"] == 1088
        assert run.summary["timings"] == record["timings"]
        assert run.summary["higher_is_better"] == record["higher_is_better"]
        assert run.summary["git_commit"] == record["git_commit"]


def test_leaderboard_run_holds_the_store_leaderboard_table(store, logged):
    _, runs, _ = logged
    (board,) = by_job(runs, "leaderboard")
    assert board.group == "toy-v2" and board.exit_code == 0
    assert board.config == {"suite": SUITE, "cells": 8}
    expected = leaderboard(records_to_frame(store.records()))
    table = board.table("leaderboard")
    assert list(table.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    cells = board.table("cells")
    assert sorted(cells["cell_id"]) == sorted(store.finished_ids())


def test_leaderboard_run_holds_the_plots(store, tmp_path):
    frame = records_to_frame(store.records())
    plots = write_plots(frame, tmp_path / "expected", leaderboard(frame))
    log_leaderboard_run(list(store.records()), project="stitching-test", mode="offline", dir=tmp_path)
    (board,) = offline_runs(tmp_path)
    images = {k.removeprefix("plots/"): v for k, v in board.summary.items() if k.startswith("plots/")}
    assert set(images) == set(plots)
    for name, ref in images.items():
        assert ref["_type"] == "image-file"
        with Image.open(board.dir / "files" / ref["path"]) as logged, Image.open(plots[name]) as expected:
            logged, expected = np.asarray(logged.convert("RGB")), np.asarray(expected.convert("RGB"))
        np.testing.assert_array_equal(logged, expected, err_msg=name)  # the store's figure, pixel for pixel
        assert logged.std() > 0, name  # and not a blank canvas


def test_records_rebuilt_from_runs_give_the_store_leaderboard(store, logged):
    _, runs, _ = logged
    rebuilt = [record_from_run(r.config, r.summary, r.id) for r in by_job(runs, "cell")]
    stored = {r["cell_id"]: r for r in store.records()}
    for r in rebuilt:
        s = stored[r["cell_id"]]
        assert (r["suite"], r["config"], r["metrics"], r["timings"]) == (
            s["suite"],
            s["config"],
            s["metrics"],
            s["timings"],
        )
    pd.testing.assert_frame_equal(
        leaderboard(records_to_frame(rebuilt)), leaderboard(records_to_frame(stored.values()))
    )


def test_relogging_reuses_the_run_id(store, logged, tmp_path):
    paths, _, _ = logged
    record = next(store.records())
    again = log_cell_record(record, project="stitching-test", mode="offline", dir=tmp_path)
    assert again == paths[0] and again.endswith(cell_run_id(record))
    (run,) = offline_runs(tmp_path)
    assert run.id == cell_run_id(record) and run.summary["penalty"] == record["metrics"]["penalty"]


def test_empty_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="stitching bench"):
        log_cells_to_wandb(tmp_path, mode="offline", dir=tmp_path)


# ---- leaderboard through the public API (a stand-in Api: no server) -------------------------------------


class FakeRun:
    def __init__(self, offline_run):
        self.id, self.group, self.job_type = offline_run.id, offline_run.group, offline_run.job_type
        self.config = {k: v for k, v in offline_run.config.items()}
        self.summary_metrics = offline_run.summary


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return [
            r
            for r in self._runs
            if all(r.job_type == v for k, v in (filters or {}).items() if k == "jobType")
        ]


@pytest.fixture(scope="module")
def fake_api(logged):
    _, runs, _ = logged
    other = [FakeRun(r) for r in runs]
    return FakeApi(other)


def test_leaderboard_from_wandb_equals_the_store_leaderboard(store, fake_api):
    table = leaderboard_from_wandb("team/stitching", api=fake_api)
    assert fake_api.calls[-1] == ("team/stitching", {"jobType": "cell"})
    pd.testing.assert_frame_equal(table, leaderboard(records_to_frame(store.records())))


def test_group_selects_a_suite_by_name_or_group(store, logged):
    _, runs, _ = logged
    other = [FakeRun(r) for r in by_job(runs, "cell")[:2]]
    for run in other:  # the same cells from another suite version, on another machine
        run.group = "toy-v3"
        run.config = {**run.config, "suite": {"name": "toy", "version": "3"}}
    api = FakeApi([FakeRun(r) for r in runs] + other)
    assert len(records_from_wandb("t/p", group="toy-v2", api=api)) == 8
    assert len(records_from_wandb("t/p", group="toy-v3", api=api)) == 2
    # by suite name: both versions; identical cells (same cell_id) count once
    assert len(records_from_wandb("t/p", group="toy", api=api)) == 8
    with pytest.raises(LookupError, match="no stitching cell runs"):
        leaderboard_from_wandb("t/p", group="nope", api=api)


def test_a_foreign_run_is_named_in_the_error():
    with pytest.raises(ValueError, match="run abc is not a stitching cell run"):
        record_from_run({"lr": 0.1}, {"loss": 1.0}, "abc")


@pytest.mark.skipif(
    not (os.environ.get("WANDB_API_KEY") and os.environ.get("STITCHING_WANDB_TEST_PROJECT")),
    reason="network test: needs WANDB_API_KEY and STITCHING_WANDB_TEST_PROJECT=ENTITY/PROJECT (a scratch "
    "project it may write to); nothing is sent without both",
)
def test_public_api_round_trip(store, tmp_path):
    path = os.environ["STITCHING_WANDB_TEST_PROJECT"]
    entity, project = path.split("/")
    log_cells_to_wandb(store.root, project=project, entity=entity, mode="online", dir=tmp_path, plots=False)
    table = leaderboard_from_wandb(path, group="toy-v2")
    pd.testing.assert_frame_equal(table, leaderboard(records_to_frame(store.records())), check_dtype=False)


# ---- mode ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setattr("stitching.tracking._mode._settings_have_key", lambda: False)
    return tmp_path / "netrc"


def test_offline_without_a_key_online_with_one(no_credentials, monkeypatch):
    assert resolve_mode() == "offline"
    no_credentials.write_text(f"machine api.wandb.ai\n  login user\n  password {'a' * 40}\n")
    assert resolve_mode() == "online"
    no_credentials.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode() == "disabled"
    assert resolve_mode("offline") == "offline"
    with pytest.raises(ValueError, match="unknown W&B mode 'ofline'"):
        resolve_mode("ofline")


# ---- sweep -----------------------------------------------------------------------------------------------


def test_sweep_agent_command_runs_one_cell(store):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    cells = [Cell(CellConfig.from_dict(r["config"]), SuiteRef(**r["suite"])) for r in store.records()]
    assert [c.cell_id for c in cells] == [r["cell_id"] for r in store.records()]
    config = sweep_config("benchmarks/toy.yaml", cells)
    assert config["method"] == "grid" and config["name"] == "toy-v2"
    assert config["parameters"] == {"cell": {"values": [c.cell_id for c in cells]}}
    # Expand the command the way wandb's agent does (whole-token macros) for one grid point.
    chosen = cells[3].cell_id
    sweep_vars = create_sweep_command_args({"args": {"cell": {"value": chosen}}})
    sweep_vars["env"] = ["/usr/bin/env"]
    argv = [
        a for tok in config["command"] for a in (sweep_vars[tok[2:-1]] if tok.startswith("${") else [tok])
    ]
    assert argv == [
        "/usr/bin/env",
        "stitching",
        "bench",
        "benchmarks/toy.yaml",
        "--results",
        "results",
        f"--cell={chosen}",
    ]
    parser = argparse.ArgumentParser()  # what `stitching bench` needs to accept
    parser.add_argument("suite")
    parser.add_argument("--results")
    parser.add_argument("--cell")
    assert parser.parse_args(argv[3:]).cell == chosen


def test_sweep_main_writes_yaml_for_a_suite(tmp_path, capsys):
    import yaml

    from stitching.bench.grid import expand_suite
    from stitching.bench.suite import load_suite

    out = tmp_path / "sweep.yaml"
    assert sweep_main(["benchmarks/digits.yaml", "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    ids = [c.cell_id for c in expand_suite(load_suite("benchmarks/digits.yaml"))]
    assert written["parameters"]["cell"]["values"] == ids and len(ids) == len(set(ids))
    assert sweep_main(["benchmarks/nope.yaml"]) == 2
    assert "error" in capsys.readouterr().err


def test_nan_metrics_survive_the_round_trip(tmp_path):
    record = synthetic_records()[0]
    record["metrics"]["lstsq_acc"] = float("nan")
    log_cell_record(record, project="stitching-test", mode="offline", dir=tmp_path)
    (run,) = offline_runs(tmp_path)
    assert read_offline_run(run.dir).summary["lstsq_acc"] is None  # W&B writes NaN as null
    back = record_from_run(run.config, run.summary, run.id)
    assert math.isnan(back["metrics"]["lstsq_acc"])


@pytest.fixture
def fresh_wandb_setup():
    """wandb reads its environment once per process setup; the agent starts each run in a new process."""
    wandb.teardown()
    yield
    wandb.teardown()


def test_under_a_sweep_agent_the_agents_run_is_used(monkeypatch, tmp_path, fresh_wandb_setup):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    monkeypatch.setenv("WANDB_PROJECT", "from-agent")
    record = synthetic_records()[1]
    path = log_cell_record(record, mode="offline", dir=tmp_path)
    (run,) = offline_runs(tmp_path)
    assert path == "from-agent/agentrun1" and (run.id, run.project) == ("agentrun1", "from-agent")
    assert (
        run.summary["penalty"] == record["metrics"]["penalty"] and run.config["cell_id"] == record["cell_id"]
    )
