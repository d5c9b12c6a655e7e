"""Figures from the tidy cell table and its leaderboard: penalty vs depth with interval bands, cut-matrix
heatmaps marking stitches indistinguishable from the target, alignment (calibrated when available) vs
stitching."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from scipy.stats import spearmanr

from stitching._utils import atomic_path
from stitching.bench.columns import DESCRIPTIVE, NOT_ALIGNMENT, split_suffix


def write_plots(
    frame: pd.DataFrame, out_dir: str | Path, table: pd.DataFrame
) -> dict[str, Path]:
    """Every figure of the cell table ``frame`` under ``out_dir``: name -> path. Intervals come from the
    leaderboard ``table`` of ``frame`` (``stitching.bench.leaderboard.leaderboard``)."""
    out_dir = Path(out_dir)
    paths = {"penalty_vs_depth": penalty_vs_depth(frame, out_dir / "penalty_vs_depth.png", table)}
    heatmaps = cut_heatmaps(frame, out_dir / "heatmaps", table)
    paths.update({f"heatmap_{k}": v for k, v in heatmaps.items()})
    alignment = alignment_vs_stitching(frame, out_dir / "alignment_vs_stitching.png")
    if alignment is not None:
        paths["alignment_vs_stitching"] = alignment
    return paths


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically (a reader never sees half an image) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _grid(n: int, size: float = 3.0):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def diagonal(frame: pd.DataFrame) -> pd.DataFrame:
    """Per pair and source cut, the cells whose target cut is nearest in relative depth (all cells of a
    matched-depth suite; the near-diagonal of a full cut matrix)."""
    gap = (frame["target_depth"] - frame["source_depth"]).abs()
    nearest = gap.groupby([frame["source"], frame["target"], frame["source_cut"]]).transform("min")
    return frame[gap == nearest]


SERIES = (
    ("penalty", "stitched", "o-"),
    ("noise_penalty", "clustered noise", "^:"),
    ("control_penalty", "random source", "s--"),
)
"""Penalty series of ``penalty_vs_depth``: metric, legend label, line style."""
VARIANT = ("adapter", "init", "objective", "recipe", "suite_version")
"""Leaderboard columns that separate the lines of one pair's panel when they vary."""


def penalty_vs_depth(frame: pd.DataFrame, path: Path, table: pd.DataFrame) -> Path:
    """Penalty against relative source depth per (source -> target) pair, with the clustered-noise and
    random-source controls (the form of Bansal et al. 2021, Fig. 2). Points are the leaderboard rows' means
    over seeds; bands (and error bars) their 95% intervals (hierarchical bootstrap over seeds and images).
    One line per setup when a pair has several (adapter, init, objective, recipe, suite version)."""
    matched = diagonal(table)
    pairs = sorted(matched.groupby(["source", "target", "pair_kind"]).groups)
    fig, axes = _grid(len(pairs))
    for ax, (src, tgt, kind) in zip(axes, pairs, strict=False):
        sub = matched[(matched.source == src) & (matched.target == tgt) & (matched.pair_kind == kind)]
        variants = [c for c in VARIANT if c in sub and sub[c].nunique(dropna=False) > 1]
        setups = sub.groupby(variants, dropna=False) if variants else [((), sub)]
        for key, rows in setups:
            key = key if isinstance(key, tuple) else (key,)
            _penalty_series(ax, rows, f" ({', '.join(map(str, key))})" if variants else "")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(
            f"{src} → {tgt}" + ("" if kind == "cross_arch" else f" ({kind.replace('_', ' ')})"), fontsize=9
        )
        ax.set_xlabel("relative depth of source cut")
        ax.set_xlim(-0.05, 1.05)
    axes[0].set_ylabel("penalty (points)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Stitching penalty by depth (lower is better; bands: 95% intervals)")
    fig.tight_layout()
    return _save(fig, path)


def _penalty_series(ax, rows: pd.DataFrame, suffix: str) -> None:
    """The stitched penalty and each control of one setup: mean line, interval band and error bars."""
    for metric, label, style in SERIES:
        columns = [f"{metric}_{s}" for s in ("mean", "low", "high")]
        if not all(c in rows for c in columns) or rows[columns[0]].isna().all():
            continue
        stats = 100 * rows.groupby("source_depth")[columns].mean()  # several target cuts equally near: mean
        depth = stats.index.to_numpy()
        mean, low, high = (stats[c].to_numpy(dtype=float) for c in columns)
        yerr = np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0)
        bars = ax.errorbar(depth, mean, yerr=yerr, fmt=style, capsize=2, label=label + suffix, markersize=4)
        has = ~(np.isnan(low) | np.isnan(high))
        if has.any():
            color = bars.lines[0].get_color()
            ax.fill_between(depth[has], low[has], high[has], color=color, alpha=0.2, lw=0)


INDISTINGUISHABLE_MARK = "≈"
"""Prefix of a heatmap cell whose penalty interval contains 0 (the cell is also outlined)."""


def cut_heatmaps(frame: pd.DataFrame, out_dir: Path, table: pd.DataFrame) -> dict[str, Path]:
    """Stitched accuracy for every source cut x target cut, one heatmap per model pair. A cut pair whose
    penalty interval contains 0 for every leaderboard row at it (stitched indistinguishable from the
    target) is marked ``≈`` and outlined."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for (src, tgt), sub in frame.groupby(["source", "target"]):
        grid = sub.pivot_table(
            index="source_depth", columns="target_depth", values="stitched_acc", aggfunc="mean"
        )
        rows = table[(table.source == src) & (table.target == tgt)]
        same = rows.groupby(["source_depth", "target_depth"])["vs_target"].agg(
            lambda v: bool((v == "indistinguishable").all())
        )
        src_names = sub.drop_duplicates("source_depth").set_index("source_depth")["source_cut"]
        tgt_names = sub.drop_duplicates("target_depth").set_index("target_depth")["target_cut"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * grid.shape[1], 1.3 + 0.5 * grid.shape[0]))
        image = ax.imshow(100 * grid.to_numpy(), vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(
            range(grid.shape[1]), [tgt_names[d] for d in grid.columns], rotation=45, ha="right", fontsize=7
        )
        ax.set_yticks(range(grid.shape[0]), [src_names[d] for d in grid.index], fontsize=7)
        for (i, j), value in np.ndenumerate(100 * grid.to_numpy()):
            if np.isnan(value):
                continue
            marked = bool(same.get((grid.index[i], grid.columns[j]), False))
            text = f"{INDISTINGUISHABLE_MARK}{value:.0f}" if marked else f"{value:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white")
            if marked:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5))
        ax.set_xlabel(f"target cut ({tgt})")
        ax.set_ylabel(f"source cut ({src})")
        ax.set_title(f"{INDISTINGUISHABLE_MARK}, outlined: penalty 95% CI contains 0", fontsize=7)
        fig.colorbar(image, ax=ax, label="stitched acc (%)")
        fig.tight_layout()
        paths[f"{src}__{tgt}"] = _save(fig, out_dir / f"{src}__{tgt}.png")
    return paths


def alignment_columns(frame: pd.DataFrame) -> list[str]:
    """The float columns of ``frame`` that are alignment metrics (raw scores: not their permutation-test
    ``_p``/``_null95``/``_calibrated`` columns, not the records' interval bounds)."""
    return [
        c
        for c in frame.columns
        if c not in NOT_ALIGNMENT
        and c not in DESCRIPTIVE
        and not split_suffix(c)[1]
        and frame[c].dtype.kind == "f"
    ]


def alignment_score(frame: pd.DataFrame, metric: str) -> tuple[str, bool]:
    """The column to plot for ``metric``: ``<metric>_calibrated`` when every cell with a raw score has a
    calibrated one (permutation test), else the raw score; and whether it is calibrated."""
    calibrated = f"{metric}_calibrated"
    if calibrated in frame:
        raw = frame[metric].notna()
        if raw.any() and frame.loc[raw, calibrated].notna().all():
            return calibrated, True
    return metric, False


def alignment_vs_stitching(frame: pd.DataFrame, path: Path) -> Path | None:
    """Stitched accuracy against each alignment metric, with Spearman's rank correlation in the title: the
    calibrated score (``<metric>_calibrated``, x label and title say so) when the cells have one, else raw."""
    metrics = alignment_columns(frame)
    if not metrics:
        return None
    fig, axes = _grid(len(metrics))
    kinds = sorted(frame.pair_kind.unique())
    for ax, metric in zip(axes, metrics, strict=False):
        column, calibrated = alignment_score(frame, metric)
        for kind in kinds:
            sub = frame[frame.pair_kind == kind]
            ax.scatter(sub[column], 100 * sub["stitched_acc"], s=10, alpha=0.7, label=kind)
        rho = spearmanr(frame[column], frame["stitched_acc"], nan_policy="omit").statistic
        ax.set_title(f"{metric}, {'calibrated' if calibrated else 'raw'} (ρ = {rho:.2f})", fontsize=9)
        ax.set_xlabel(column)
    axes[0].set_ylabel("stitched acc (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Does alignment predict stitchability? (Spearman ρ over cells)")
    fig.tight_layout()
    return _save(fig, path)
