"""Figures of the colour experiment: the two kernels side by side, and alignment layer by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from stitching.prh.colour import hue_order


def _pca2(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :2] * s[:2]


def _cosine(x: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    return unit @ unit.T


def _gaussian(lab: np.ndarray) -> np.ndarray:
    d2 = ((lab[:, None, :] - lab[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * np.median(d2)))


def plot_kernels(path: Path, text: Tensor, perceptual: Tensor, rgb: np.ndarray, label: str) -> None:
    """Top: 2-D PCA of each representation, every colour drawn in its own colour (the paper's colour
    figure); bottom: the two similarity matrices ordered by hue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text_np, lab_np = text.double().numpy(), perceptual.double().numpy()
    unit = text_np / np.linalg.norm(text_np, axis=1, keepdims=True).clip(1e-12)
    order = hue_order(rgb)
    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    panels = [
        (axes[0, 0], _pca2(lab_np), "Perception: CIELAB, PCA"),
        (axes[0, 1], _pca2(unit), f"Language: {label}, PCA of unit rows"),
    ]
    for ax, xy, title in panels:
        ax.scatter(xy[:, 0], xy[:, 1], c=np.clip(rgb, 0, 1), s=14, edgecolors="none")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("0.5")
    kernels = [
        (axes[1, 0], _gaussian(lab_np), "CIELAB kernel exp(-dE^2 / 2 median dE^2)"),
        (axes[1, 1], _cosine(text_np), "language kernel (cosine)"),
    ]
    for ax, kernel, title in kernels:
        ax.imshow(kernel[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
        ax.set_title(f"{title}, colours by hue")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.scatter(
            np.arange(len(order)),
            np.full(len(order), -8),
            c=np.clip(rgb[order], 0, 1),
            s=4,
            marker="s",
            clip_on=False,
        )
    fig.suptitle(f"{len(rgb)} XKCD colour names: perception vs language")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_alignment(path: Path, table: pd.DataFrame, label: str) -> None:
    """Calibrated alignment and raw score (with the null's 95th percentile) against the layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = table[table.kind == "layer"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for metric, group in layers.groupby("metric", sort=False):
        left.plot(group.layer, group.calibrated, marker="o", label=metric)
        line = right.plot(group.layer, group.score, marker="o", label=f"{metric} score")[0]
        right.plot(group.layer, group.null95, ls="--", color=line.get_color(), label=f"{metric} null95")
    left.set(
        xlabel="hidden state (0 = embeddings)",
        ylabel="calibrated alignment",
        title=f"{label} vs CIELAB: calibrated",
    )
    right.set(
        xlabel="hidden state (0 = embeddings)", ylabel="raw score", title="raw score and permutation null"
    )
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
