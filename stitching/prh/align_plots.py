"""Figures of many-model alignment: the model x model matrix, layer-by-layer heatmaps, sweeps over k and n."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stitching._utils import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return path


def _annotate(ax, values: np.ndarray) -> None:
    if values.size > 400:
        return
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")


def plot_matrices(path: Path, metric: str, frames: dict[str, pd.DataFrame], subtitle: str) -> Path:
    """Raw best-layer scores and calibrated scores side by side (the paper's matrix, in the given order)."""
    plt = _pyplot()
    score, calibrated = frames["score"], frames["calibrated"]
    side = max(4.0, 0.45 * max(score.shape) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, frame, title in ((axes[0], score, "best-layer score"), (axes[1], calibrated, "calibrated")):
        values = frame.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(frame.shape[1]), frame.columns, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(frame.shape[0]), frame.index, fontsize=8)
        ax.set_title(f"{metric}: {title}")
        _annotate(ax, values)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_scores(
    path: Path,
    scores: np.ndarray,
    layers_a: Sequence[str],
    layers_b: Sequence[str],
    best: tuple[int, int],
    title: str,
) -> Path:
    """One pair's score at every layer pair, the best pair marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(layers_b) + 3), max(3.5, 0.3 * len(layers_a) + 2)))
    image = ax.imshow(scores, cmap="viridis", interpolation="nearest", aspect="auto")
    ax.scatter([best[1]], [best[0]], marker="*", s=120, color="red")
    ax.set_xticks(range(len(layers_b)), layers_b, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers_a)), layers_a, fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(path: Path, table: pd.DataFrame) -> Path:
    """Mean over pairs of the best-layer score (left) and the calibrated score (right) against n, per k."""
    plt = _pyplot()
    metrics = list(dict.fromkeys(table.metric))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 3.6 * len(metrics)), squeeze=False)
    for row, metric in zip(axes, metrics, strict=True):
        part = table[table.metric == metric].fillna({"k": -1})
        for k, group in part.groupby("k"):
            mean = group.groupby("n")[["score", "calibrated"]].mean()
            label = f"k = {int(k)}" if k >= 0 else metric
            row[0].plot(mean.index, mean.score, marker="o", label=label)
            row[1].plot(mean.index, mean.calibrated, marker="o", label=label)
        for ax, what in zip(row, ("best-layer score", "calibrated"), strict=True):
            ax.set(
                xscale="log", xlabel="n (samples)", ylabel=what, title=f"{metric}: {what}, mean over pairs"
            )
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
