"""The leaderboard from a results store of synthetic records and predictions: intervals from the kept
predictions, shared ranks, flags, separate rows per recipe, and the plots' interval bands and marks."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from stitching.bench import plots
from stitching.bench.leaderboard import (
    SELF_FLAG,
    UNCONVERGED_FLAG,
    leaderboard,
    recipe_label,
    records_to_frame,
    to_markdown,
    write_leaderboard,
)
from stitching.bench.record import make_record
from stitching.bench.statistics import N_RESAMPLES, SEED, cell_statistics
from stitching.bench.store import ResultStore
from stitching.stats import hierarchical_bootstrap

N = 400
LABELS = np.random.default_rng(0).integers(0, 10, N)
RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "epochs": 40,
          "batch_size": 128, "patience": 5}  # fmt: skip


def predictions(seed: int, extra_wrong: int, n: int = N) -> dict[str, np.ndarray]:
    """Target wrong on 20 images; stitched wrong on those and ``extra_wrong`` more (penalty extra/N);
    the random-source control wrong on 40%, clustered noise on 20%."""
    rng = np.random.default_rng(seed + 1)
    labels = LABELS[:n]
    order = rng.permutation(n)

    def wrong_on(index):
        pred = labels.copy()
        pred[index] = (labels[index] + 1) % 10
        return pred

    target = wrong_on(order[:20])
    stitched = wrong_on(order[: 20 + extra_wrong])
    return {
        "labels": labels, "target": target, "source": target, "lstsq": stitched, "init": stitched,
        "stitched": stitched, "random_source": wrong_on(order[: int(0.4 * n)]),
        "clustered_noise": wrong_on(order[n - int(0.2 * n):]),
    }  # fmt: skip


def add_cell(store, name, *, source="a", target="b", kind="cross_arch", seed=0, extra_wrong=0, depth=0.5,
             recipe=RECIPE, converged=True, keep_predictions=True, n=N):  # fmt: skip
    preds = predictions(seed, extra_wrong, n)
    acc = {k: float(np.mean(v == preds["labels"])) for k, v in preds.items() if k != "labels"}
    metrics = {
        "target_acc": acc["target"], "source_acc": acc["source"], "lstsq_acc": acc["lstsq"],
        "init_acc": acc["init"], "stitched_acc": acc["stitched"], "penalty": acc["target"] - acc["stitched"],
        "control_acc": acc["random_source"], "control_penalty": acc["target"] - acc["random_source"],
        "noise_acc": acc["clustered_noise"], "noise_penalty": acc["target"] - acc["clustered_noise"],
    }  # fmt: skip
    statistics = cell_statistics(preds)
    metrics["penalty_p"] = statistics.pop("penalty_p")
    config = {
        "source": {"key": source, "name": f"m_{source}", "seed": seed},
        "target": {"key": target, "name": f"m_{target}", "seed": 10 + seed},
        "pair_kind": kind, "source_cut": f"s{depth}", "target_cut": f"t{depth}", "source_depth": depth,
        "target_depth": depth, "adapter": {}, "init": "lstsq", "stitch_seed": seed, "recipe": recipe,
        "objective": "task",
    }  # fmt: skip
    cell = {"cell_id": name, "suite": {"name": "synthetic", "version": "1"}, "config": config}
    training = {"converged": converged, "best_epoch": 3, "epochs_run": 8}
    record = make_record(cell, metrics, {"train": 1.0}, training=training, statistics=statistics)
    store.write(record, predictions=preds if keep_predictions else None)
    return preds


@pytest.fixture
def store(tmp_path):
    store = ResultStore(tmp_path)
    for seed in (0, 1):
        add_cell(store, f"near{seed}", seed=seed, extra_wrong=20, depth=0.25)  # penalty 5 points
        add_cell(store, f"close{seed}", seed=seed, extra_wrong=24, depth=0.5)  # 6 points: overlaps
        add_cell(store, f"far{seed}", seed=seed, extra_wrong=120, depth=0.75)  # 30 points: separate
        add_cell(store, f"same{seed}", source="c", target="c", kind="self", seed=seed)  # identical to target
    add_cell(store, "broken", source="d", target="d", kind="self", extra_wrong=60)  # self-stitch, 15 points
    add_cell(store, "slow", source="e", extra_wrong=4, converged=False)
    add_cell(store, "short", source="f", recipe={**RECIPE, "epochs": 10, "patience": None})
    add_cell(store, "long", source="f", recipe={**RECIPE, "epochs": 80})
    return store


@pytest.fixture
def table(store):
    return leaderboard(records_to_frame(store.records()), store)


def row(table, **where):
    match = table
    for column, value in where.items():
        match = match[match[column] == value]
    assert len(match) == 1, where
    return match.iloc[0]


def test_row_intervals_are_the_hierarchical_bootstrap_of_its_cells(store, table):
    near = row(table, source="a", source_depth=0.25)
    assert near["n"] == 2 and near["penalty_mean"] == pytest.approx(0.05)
    groups = []
    for cell_id in ("near0", "near1"):
        p = store.predictions(cell_id)
        groups.append({k: v == p["labels"] for k, v in p.items() if k != "labels"})
    expected = hierarchical_bootstrap(
        groups,
        differences={"penalty": ("target", "stitched"), "noise_penalty": ("target", "clustered_noise")},
        n_resamples=N_RESAMPLES,
        seed=SEED,
    )
    assert (near["penalty_low"], near["penalty_high"]) == pytest.approx(
        (expected.differences["penalty"].low, expected.differences["penalty"].high)
    )
    assert near["noise_penalty_low"] == pytest.approx(expected.differences["noise_penalty"].low)
    assert near["stitched_acc_high"] == pytest.approx(expected.accuracy["stitched"].high)
    assert 0 < near["penalty_low"] < 0.05 < near["penalty_high"]


def test_a_one_cell_row_has_its_paired_interval_with_or_without_kept_predictions(store, table, tmp_path):
    record = store.read("slow")
    slow = row(table, source="e")
    assert [slow["penalty_low"], slow["penalty_high"]] == pytest.approx(
        record["statistics"]["intervals"]["penalty"]
    )
    bare = ResultStore(tmp_path / "bare")  # the same record, its predictions not kept
    bare.write(record)
    alone = leaderboard(records_to_frame(bare.records()), bare).iloc[0]
    assert [alone["penalty_low"], alone["penalty_high"]] == pytest.approx(
        record["statistics"]["intervals"]["penalty"]
    )


def test_overlapping_penalty_intervals_share_a_rank_and_a_separated_one_does_not(table):
    near, close = row(table, source="a", source_depth=0.25), row(table, source="a", source_depth=0.5)
    far = row(table, source="a", source_depth=0.75)
    assert close["penalty_low"] <= near["penalty_high"]  # the premise: their intervals overlap
    assert near["rank"] == close["rank"]
    assert far["penalty_low"] > close["penalty_high"] and far["rank"] > close["rank"]
    assert list(table["rank"]) == sorted(table["rank"])  # sorted by (rank, penalty)
    assert list(table["penalty_mean"]) == sorted(table["penalty_mean"])


def test_a_stitch_identical_to_the_target_is_indistinguishable_with_interval_zero(table):
    same = row(table, source="c")
    assert (same["penalty_low"], same["penalty_mean"], same["penalty_high"]) == (0.0, 0.0, 0.0)
    assert same["vs_target"] == "indistinguishable" and same["flag"] == ""
    assert row(table, source="a", source_depth=0.75)["vs_target"] == "worse"


def test_a_self_stitch_with_a_clear_penalty_is_flagged(table):
    broken = row(table, source="d")
    assert broken["pair_kind"] == "self" and broken["penalty_low"] > 0
    assert broken["flag"] == SELF_FLAG
    assert SELF_FLAG not in row(table, source="a", source_depth=0.75)["flag"]  # not a self-stitch


def test_cells_with_different_recipes_are_separate_rows(table):
    rows = table[table.source == "f"]
    assert sorted(rows["recipe"]) == ["adamw lr=0.001 e10", "adamw lr=0.001 e80 p5"]
    assert list(rows["n"]) == [1, 1]
    assert recipe_label({**RECIPE, "weight_decay": 0.01, "schedule": "constant"}) == (
        "adamw lr=0.001 e40 p5 wd0.01 constant"
    )


def test_an_unconverged_cell_is_flagged_and_counted(table):
    slow = row(table, source="e")
    assert slow["unconverged"] == 1 and slow["flag"] == UNCONVERGED_FLAG
    assert (table.loc[table.source != "e", "unconverged"] == 0).all()


def test_cell_table_has_the_new_columns_and_old_records_still_load(store, tmp_path):
    frame = records_to_frame(store.records())
    near0 = frame.set_index("cell_id").loc["near0"]
    assert near0["objective"] == "task" and near0["recipe"] == "adamw lr=0.001 e40 p5"
    assert near0["converged"] is True or near0["converged"] == True  # noqa: E712 (a numpy bool)
    assert [near0["penalty_low"], near0["penalty_high"]] == store.read("near0")["statistics"]["intervals"][
        "penalty"
    ]
    assert 0 <= near0["penalty_p"] < 0.05
    old = store.read("near0")
    for key in ("statistics", "training"):
        old.pop(key)
    old["metrics"].pop("penalty_p")
    old["config"].pop("objective")
    frame = records_to_frame([old])
    assert np.isnan(frame.loc[0, "penalty_low"]) and np.isnan(frame.loc[0, "penalty_p"])
    assert frame.loc[0, "converged"] is None and frame.loc[0, "objective"] == "task"
    board = leaderboard(frame)
    assert board.loc[0, "vs_target"] == "no interval" and board.loc[0, "rank"] == 1


def test_markdown_explains_intervals_and_notes_a_small_test_set(table, tmp_path):
    text = to_markdown(table, "Leaderboard: synthetic")
    assert "95% intervals" in text and "clustered noise" in text and "random" in text
    header = next(line for line in text.splitlines() if line.startswith("| rank"))
    assert header.count("|") == 14 and "setup" in header  # recipes vary: a setup column
    assert "small test set" not in text
    small = ResultStore(tmp_path / "small")
    add_cell(small, "tiny", n=50, extra_wrong=2)
    text = to_markdown(leaderboard(records_to_frame(small.records()), small), "t")
    assert "**Note:** small test set: 50 images" in text
    assert "| 56.0 [" in text and "| 4.0 [" in text  # stitched acc and penalty, in points


@pytest.fixture
def figures(monkeypatch):
    saved = {}

    def keep(fig, path):
        saved[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_plots_draw_interval_bands_and_mark_stitches_indistinguishable_from_the_target(store, figures):
    paths = write_leaderboard(store.root)
    board = leaderboard(records_to_frame(store.records()), store)
    assert {"cells", "leaderboard_csv", "leaderboard_md", "penalty_vs_depth"} <= set(paths)
    axes = {ax.get_title(): ax for ax in figures["penalty_vs_depth.png"].axes if ax.get_visible()}
    ax = axes["a → b"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # stitched, clustered noise, random source
    rows = board[(board.source == "a") & (board.target == "b")].sort_values("source_depth")
    stitched = bands[0].get_paths()[0].vertices
    for depth, low, high in zip(rows["source_depth"], rows["penalty_low"], rows["penalty_high"], strict=True):
        at = stitched[np.isclose(stitched[:, 0], depth), 1]
        assert at.min() == pytest.approx(100 * low) and at.max() == pytest.approx(100 * high)
    assert set(ax.get_legend_handles_labels()[1]) == {"stitched", "clustered noise", "random source"}
    same = figures["c__c.png"].axes[0]
    assert [t.get_text() for t in same.texts] == [
        f"{plots.INDISTINGUISHABLE_MARK}95"
    ]  # target and stitched: 95%
    assert [p for p in same.patches if isinstance(p, Rectangle)]
    assert "contains 0" in same.get_title()
    far = figures["d__d.png"].axes[0]  # a clear penalty: no mark, no outline
    assert plots.INDISTINGUISHABLE_MARK not in far.texts[0].get_text() and not far.patches
