"""Figures from the tidy cell table: penalty vs depth, cut-matrix heatmaps, alignment vs stitching."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from stitching._utils import atomic_path
from stitching.bench.columns import NOT_ALIGNMENT


def write_plots(frame: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Every figure of the cell table ``frame`` under ``out_dir``: name -> path."""
    out_dir = Path(out_dir)
    paths = {"penalty_vs_depth": penalty_vs_depth(frame, out_dir / "penalty_vs_depth.png")}
    heatmaps = cut_heatmaps(frame, out_dir / "heatmaps")
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


def penalty_vs_depth(frame: pd.DataFrame, path: Path) -> Path:
    """Penalty against relative source depth per (source -> target) pair, with the random-source control
    (the form of Bansal et al. 2021, Fig. 2). Mean over seeds, error bars one standard deviation."""
    matched = diagonal(frame)
    pairs = sorted(matched.groupby(["source", "target", "pair_kind"]).groups)
    fig, axes = _grid(len(pairs))
    for ax, (src, tgt, kind) in zip(axes, pairs, strict=False):
        sub = matched[(matched.source == src) & (matched.target == tgt) & (matched.pair_kind == kind)]
        present = [m for m in ("penalty", "control_penalty") if m in sub]
        stats = sub.groupby("source_depth")[present].agg(["mean", "std"])
        depth = stats.index.to_numpy()
        for metric, label, style in (
            ("penalty", "stitched", "o-"),
            ("control_penalty", "random source", "s--"),
        ):
            if metric in stats:
                ax.errorbar(
                    depth,
                    100 * stats[metric]["mean"],
                    yerr=100 * stats[metric]["std"].fillna(0),
                    fmt=style,
                    capsize=2,
                    label=label,
                    markersize=4,
                )
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(
            f"{src} → {tgt}" + ("" if kind == "cross_arch" else f" ({kind.replace('_', ' ')})"), fontsize=9
        )
        ax.set_xlabel("relative depth of source cut")
        ax.set_xlim(-0.05, 1.05)
    axes[0].set_ylabel("penalty (points)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Stitching penalty by depth (lower is better)")
    fig.tight_layout()
    return _save(fig, path)


def cut_heatmaps(frame: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Stitched accuracy for every source cut x target cut, one heatmap per model pair."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for (src, tgt), sub in frame.groupby(["source", "target"]):
        table = sub.pivot_table(
            index="source_depth", columns="target_depth", values="stitched_acc", aggfunc="mean"
        )
        src_names = sub.drop_duplicates("source_depth").set_index("source_depth")["source_cut"]
        tgt_names = sub.drop_duplicates("target_depth").set_index("target_depth")["target_cut"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * table.shape[1], 1.0 + 0.5 * table.shape[0]))
        image = ax.imshow(100 * table.to_numpy(), vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(
            range(table.shape[1]), [tgt_names[d] for d in table.columns], rotation=45, ha="right", fontsize=7
        )
        ax.set_yticks(range(table.shape[0]), [src_names[d] for d in table.index], fontsize=7)
        for (i, j), value in np.ndenumerate(100 * table.to_numpy()):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color="white")
        ax.set_xlabel(f"target cut ({tgt})")
        ax.set_ylabel(f"source cut ({src})")
        fig.colorbar(image, ax=ax, label="stitched acc (%)")
        fig.tight_layout()
        paths[f"{src}__{tgt}"] = _save(fig, out_dir / f"{src}__{tgt}.png")
    return paths


def alignment_columns(frame: pd.DataFrame) -> list[str]:
    """The float columns of ``frame`` that are alignment metrics."""
    return [c for c in frame.columns if c not in NOT_ALIGNMENT and frame[c].dtype.kind == "f"]


def alignment_vs_stitching(frame: pd.DataFrame, path: Path) -> Path | None:
    """Stitched accuracy against each alignment metric, with Spearman's rank correlation in the title."""
    metrics = alignment_columns(frame)
    if not metrics:
        return None
    fig, axes = _grid(len(metrics))
    kinds = sorted(frame.pair_kind.unique())
    for ax, metric in zip(axes, metrics, strict=False):
        for kind in kinds:
            sub = frame[frame.pair_kind == kind]
            ax.scatter(sub[metric], 100 * sub["stitched_acc"], s=10, alpha=0.7, label=kind)
        rho = spearmanr(frame[metric], frame["stitched_acc"], nan_policy="omit").statistic
        ax.set_title(f"{metric} (ρ = {rho:.2f})", fontsize=9)
        ax.set_xlabel(metric)
    axes[0].set_ylabel("stitched acc (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Does alignment predict stitchability? (Spearman ρ over cells)")
    fig.tight_layout()
    return _save(fig, path)
