"""The figures show the cell table's numbers: read back from the matplotlib figures before they are closed."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy.stats import spearmanr

from stitching.bench import plots
from stitching.bench.leaderboard import leaderboard
from stitching.bench.plots import diagonal


@pytest.fixture
def frame() -> pd.DataFrame:
    """Two pairs, two source cuts x two target cuts, two seeds; seeded numbers."""
    rng = np.random.default_rng(0)
    rows = []
    for source, target, kind in (("resnet", "resnet", "same_arch"), ("resnet", "vit", "cross_arch")):
        cuts = itertools.product((("layer1", 0.25), ("layer3", 0.75)), (("b1", 0.25), ("b3", 0.75)), (0, 1))
        for (s_cut, s_depth), (t_cut, t_depth), seed in cuts:
            stitched = rng.uniform(0.5, 0.9)
            rows.append(
                dict(
                    source=source, target=target, pair_kind=kind, source_cut=s_cut, target_cut=t_cut,
                    source_depth=s_depth, target_depth=t_depth, stitch_seed=seed, stitched_acc=stitched,
                    penalty=0.95 - stitched, control_penalty=rng.uniform(0.3, 0.6), seconds=1.0,
                    linear_cka=rng.uniform(0, 1), adapter="default", init="lstsq", objective="task",
                    recipe="adamw lr=0.001 e8", suite_version="1",
                )
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def figures(monkeypatch):
    """Each figure the plots module saves, by file name, kept open for inspection."""
    saved = {}

    def keep(fig, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        saved[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_penalty_vs_depth_plots_the_mean_penalty_of_matched_cuts(frame, figures, tmp_path):
    plots.penalty_vs_depth(frame, tmp_path / "p.png", leaderboard(frame))
    axes = [ax for ax in figures["p.png"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["resnet → resnet (same arch)", "resnet → vit"]
    for ax, target in zip(axes, ("resnet", "vit"), strict=True):
        sub = frame[(frame.target == target) & (frame.source_depth == frame.target_depth)]
        stitched, control = (c.lines[0].get_xydata() for c in ax.containers)
        expected = 100 * sub.groupby("source_depth")["penalty"].mean()
        np.testing.assert_allclose(stitched, np.c_[expected.index, expected.to_numpy()])
        expected = 100 * sub.groupby("source_depth")["control_penalty"].mean()
        np.testing.assert_allclose(control[:, 1], expected.to_numpy())


def test_heatmaps_show_mean_stitched_accuracy_per_cut_pair(frame, figures, tmp_path):
    paths = plots.cut_heatmaps(frame, tmp_path, leaderboard(frame))
    assert set(paths) == {"resnet__resnet", "resnet__vit"}
    (ax, _colorbar) = figures["resnet__vit.png"].axes
    shown = ax.images[0].get_array()
    sub = frame[frame.target == "vit"]
    expected = 100 * sub.pivot_table(index="source_depth", columns="target_depth", values="stitched_acc")
    np.testing.assert_allclose(shown, expected.to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer1", "layer3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b1", "b3"]


def test_alignment_plot_scatters_each_metric_against_stitched_accuracy(frame, figures, tmp_path):
    assert plots.alignment_columns(frame) == ["linear_cka"]  # not penalty, seconds, depths or seeds
    plots.alignment_vs_stitching(frame, tmp_path / "a.png")
    ax = figures["a.png"].axes[0]
    rho = spearmanr(frame["linear_cka"], frame["stitched_acc"]).statistic
    assert ax.get_title() == f"linear_cka, raw (ρ = {rho:.2f})" and ax.get_xlabel() == "linear_cka"
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = np.c_[frame["linear_cka"], 100 * frame["stitched_acc"]]
    np.testing.assert_allclose(np.sort(points, axis=0), np.sort(expected, axis=0))


def test_alignment_plot_uses_calibrated_scores_when_every_cell_has_one(frame, figures, tmp_path):
    frame = frame.assign(
        linear_cka_p=0.01, linear_cka_null95=0.1, linear_cka_calibrated=frame["linear_cka"] - 0.3
    )
    assert plots.alignment_columns(frame) == ["linear_cka"]  # the permutation-test columns are not metrics
    plots.alignment_vs_stitching(frame, tmp_path / "a.png")
    ax = figures["a.png"].axes[0]
    rho = spearmanr(frame["linear_cka_calibrated"], frame["stitched_acc"]).statistic
    assert ax.get_title() == f"linear_cka, calibrated (ρ = {rho:.2f})"
    assert ax.get_xlabel() == "linear_cka_calibrated"
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(np.sort(points[:, 0]), np.sort(frame["linear_cka_calibrated"]))
    frame.loc[0, "linear_cka_calibrated"] = np.nan  # one cell without: raw scores for all, said so
    plots.alignment_vs_stitching(frame, tmp_path / "b.png")
    assert figures["b.png"].axes[0].get_title().startswith("linear_cka, raw")


def test_penalty_bands_and_heatmap_marks_come_from_the_leaderboard_intervals(frame, figures, tmp_path):
    table = leaderboard(frame)
    assert table["penalty_low"].isna().all()  # two seeds and no kept predictions: no interval
    table["penalty_low"], table["penalty_high"] = table["penalty_mean"] - 0.02, table["penalty_mean"] + 0.03
    table["vs_target"] = "worse"
    table.loc[table.index[table.target == "vit"][:2], "vs_target"] = (
        "indistinguishable"  # two of four cut pairs
    )
    plots.penalty_vs_depth(frame, tmp_path / "p.png", table)
    ax = [ax for ax in figures["p.png"].axes if ax.get_visible()][1]  # resnet -> vit
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]  # the controls have no interval
    rows = diagonal(table)
    rows = rows[rows.target == "vit"].sort_values("source_depth")
    vertices = band.get_paths()[0].vertices
    for depth, low, high in zip(rows["source_depth"], rows["penalty_low"], rows["penalty_high"], strict=True):
        at = vertices[np.isclose(vertices[:, 0], depth), 1]
        assert at.min() == pytest.approx(100 * low) and at.max() == pytest.approx(100 * high)
    plots.cut_heatmaps(frame, tmp_path, table)
    ax = figures["resnet__vit.png"].axes[0]
    grid = table[table.target == "vit"].set_index(["source_depth", "target_depth"])["vs_target"]
    marked = [t.get_text().startswith(plots.INDISTINGUISHABLE_MARK) for t in ax.texts]
    assert marked == [grid[(s, t)] == "indistinguishable" for s in (0.25, 0.75) for t in (0.25, 0.75)]
    assert sum(marked) == 2 and len(ax.patches) == sum(marked)  # each marked cell outlined
    assert "contains 0" in ax.get_title()


def test_write_plots_whole_pngs_atomically(frame, tmp_path):
    paths = plots.write_plots(frame, tmp_path, leaderboard(frame))
    heatmaps = {"heatmap_resnet__resnet", "heatmap_resnet__vit"}
    assert set(paths) == {"penalty_vs_depth", "alignment_vs_stitching", *heatmaps}
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left behind
