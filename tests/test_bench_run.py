"""The benchmark end to end on a tiny suite: records, resume, a real kill, leaderboards, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

# The module-scoped run below cannot take conftest's function-scoped write_suite fixture: the same function.
from conftest import _write_suite

from stitching.bench import plots
from stitching.bench.grid import expand_suite
from stitching.bench.leaderboard import write_leaderboard
from stitching.bench.runner import run_suite
from stitching.bench.statistics import cell_statistics
from stitching.bench.store import ResultStore
from stitching.bench.suite import load_suite
from stitching.cli import main


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stitching-cache")
    old = os.environ.get("STITCHING_CACHE")
    os.environ["STITCHING_CACHE"] = str(path)
    import stitching.bench.cell as cell

    cell._CONTEXTS.clear()  # the process-wide contexts pick up the new cache dir
    yield path
    if old is None:
        os.environ.pop("STITCHING_CACHE")
    else:
        os.environ["STITCHING_CACHE"] = old
    cell._CONTEXTS.clear()


@pytest.fixture(scope="module")
def finished(cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    suite_path = _write_suite(root / "tiny.yaml")
    summary = run_suite(suite_path, root / "results")
    return suite_path, root / "results", summary


def test_every_cell_gets_one_complete_self_describing_record(finished):
    suite_path, results, summary = finished
    cells = expand_suite(load_suite(suite_path))
    assert summary["cells"] == len(cells) == 4 and summary["finished"] == 4 and not summary["failed"]
    records = list(ResultStore(results / "tiny").records())
    assert sorted(r["cell_id"] for r in records) == sorted(c.cell_id for c in cells)
    for r in records:
        m = r["metrics"]
        assert m["penalty"] == pytest.approx(m["target_acc"] - m["stitched_acc"])
        assert m["control_penalty"] == pytest.approx(m["target_acc"] - m["control_acc"])
        for key in ("source_acc", "lstsq_acc", "agreement", "linear_cka", "mutual_knn"):
            assert key in m
        assert r["higher_is_better"]["penalty"] is False and r["higher_is_better"]["linear_cka"] is True
        assert r["adapter_params"] > 0 and r["timings"]["total"] > 0
        assert {"torch", "timm", "lightning"} <= set(r["versions"])
        assert r["base_models"]["source"]["kind"] == "trained"
        assert r["config"]["source_cut"] and r["schema"] == "stitching.cell/2"
        kept = ResultStore(results / "tiny").predictions(r["cell_id"])  # statistics recomputable from them
        recomputed = cell_statistics(kept)
        assert recomputed["intervals"] == r["statistics"]["intervals"]
        assert recomputed["penalty_p"] == r["metrics"]["penalty_p"]
        assert np.mean(kept["stitched"] == kept["labels"]) == pytest.approx(m["stitched_acc"])


def test_rerun_skips_finished_cells(finished):
    suite_path, results, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in (results / "tiny" / "cells").glob("*.json")}
    again = run_suite(suite_path, results)
    assert again["ran"] == 0 and again["finished"] == 4
    after = {p.name: p.stat().st_mtime_ns for p in (results / "tiny" / "cells").glob("*.json")}
    assert before == after


@pytest.fixture
def figures(monkeypatch):
    """Each figure the plots module saves, by file name, read back after it was written."""
    saved = {}
    save = plots._save

    def keep(fig, path):
        saved[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_leaderboard_tables_and_plots(finished, figures):
    _, results, _ = finished
    paths = write_leaderboard(results / "tiny")
    board = pd.read_csv(paths["leaderboard_csv"])
    cells = pd.read_csv(paths["cells"])
    assert len(cells) == 4 and board["rank"].iloc[0] == 1 and board["rank"].is_monotonic_increasing
    assert board["penalty_mean"].is_monotonic_increasing
    # mean over the two resnet seed pairs equals the mean of their records
    same = cells[(cells.source == "resnet") & (cells.target == "resnet")]
    row = board[(board.source == "resnet") & (board.target == "resnet")].iloc[0]
    assert row["stitched_acc_mean"] == pytest.approx(same["stitched_acc"].mean()) and row["n"] == 2
    assert "resnet → vit" in paths["leaderboard_md"].read_text()
    # The figures plot the records' numbers: penalty per pair at the one depth, each alignment metric
    # against stitched accuracy, one heatmap per pair.
    for key in ("penalty_vs_depth", "alignment_vs_stitching"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pairs = cells.groupby(["source", "target"])
    penalty_axes = [ax for ax in figures["penalty_vs_depth.png"].axes if ax.get_visible()]
    assert len(penalty_axes) == pairs.ngroups
    for ax, ((source, target), sub) in zip(penalty_axes, pairs, strict=True):
        assert ax.get_title().startswith(f"{source} → {target}")
        stitched = ax.containers[0].lines[0].get_xydata()
        np.testing.assert_allclose(stitched, [[0.5, 100 * sub["penalty"].mean()]])
    scatter = {ax.get_xlabel(): ax for ax in figures["alignment_vs_stitching.png"].axes}
    assert set(scatter) == {"linear_cka_calibrated", "mutual_knn_calibrated"}  # calibrated scores plotted
    for metric, ax in scatter.items():
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = np.c_[cells[metric], 100 * cells["stitched_acc"]]
        np.testing.assert_allclose(np.sort(points, axis=0), np.sort(expected, axis=0))
    assert {k for k in paths if k.startswith("heatmap_")} == {f"heatmap_{s}__{t}" for s, t in pairs.groups}
    for (source, target), sub in pairs:
        (shown,) = figures[f"{source}__{target}.png"].axes[0].images
        np.testing.assert_allclose(shown.get_array(), [[100 * sub["stitched_acc"].mean()]])


def test_killed_run_resumes_without_losing_or_duplicating(cache_dir, tmp_path, write_suite):
    suite_path = write_suite(tmp_path / "killme.yaml", name="killme", stitch_seeds=[0, 1])
    results = tmp_path / "results"
    env = dict(os.environ, STITCHING_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "stitching.cli",
        "bench",
        str(suite_path),
        "--results",
        str(results),
        "--no-leaderboard",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells_dir = results / "killme" / "cells"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(cells_dir.glob("*.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no cleanup handlers run
    proc.wait()
    survivors = {p.name: p.read_text() for p in cells_dir.glob("*.json")}
    total = len(expand_suite(load_suite(suite_path)))
    assert 2 <= len(survivors) < total, "the kill should land mid-run"
    for text in survivors.values():
        json.loads(text)  # complete records only
    assert main(["bench", str(suite_path), "--results", str(results), "--no-leaderboard"]) == 0
    final = {p.name: p.read_text() for p in cells_dir.glob("*.json")}
    assert len(final) == total
    assert all(final[name] == text for name, text in survivors.items()), "finished records were redone"
    assert not list(cells_dir.glob(".*"))


def test_bad_suite_fails_before_training_with_every_problem(tmp_path, capsys, write_suite):
    suite = write_suite(
        tmp_path / "bad.yaml", inits=["lstsq", "closed_form"], cuts={"names": {"resnet": ["layer9"]}}
    )
    assert main(["bench", str(suite), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown init 'closed_form'" in err and "unknown cut 'layer9'" in err and "layer2" in err
    assert not (tmp_path / "r").exists()


def test_dry_run_lists_cells(tmp_path, capsys, write_suite):
    suite = write_suite(tmp_path / "dry.yaml")
    assert main(["bench", str(suite), "--dry-run"]) == 0
    assert "4 cells" in capsys.readouterr().out


def test_bench_logs_cells_to_wandb_offline_from_the_store(finished, tmp_path, monkeypatch):
    from wandb_offline import offline_runs

    suite_path, results, _ = finished
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    one = ResultStore(results / "tiny").records().__next__()
    args = [
        "bench",
        str(suite_path),
        "--results",
        str(results),
        "--cell",
        one["cell_id"],
        "--wandb-project",
        "stitching-test",
        "--no-leaderboard",
    ]
    assert main(args) == 0  # the cell is finished: nothing reruns, everything in the store is logged
    runs = offline_runs(tmp_path)
    cells = {r.config["cell_id"]: r for r in runs if r.job_type == "cell"}
    assert set(cells) == ResultStore(results / "tiny").finished_ids()
    assert cells[one["cell_id"]].summary["stitched_acc"] == pytest.approx(one["metrics"]["stitched_acc"])
    assert any(r.job_type == "leaderboard" for r in runs)


def test_unknown_cell_id_is_a_clear_error(finished, capsys):
    suite_path, results, _ = finished
    assert main(["bench", str(suite_path), "--results", str(results), "--cell", "nonexistent"]) == 2
    assert "no cell 'nonexistent' in this suite" in capsys.readouterr().err
