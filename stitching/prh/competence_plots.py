"""Figures of the competence suite: alignment against competence (the PRH paper's figure), a 2-D embedding
of the models by alignment, and stitching penalty against the competence of the pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stitching._utils import atomic_path

MARKERS = "osD^vP*X"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _family_styles(families: list[str]) -> dict[str, tuple[str, str]]:
    colours = [f"C{i}" for i in range(10)]
    return {f: (colours[i % 10], MARKERS[i % len(MARKERS)]) for i, f in enumerate(families)}


def plot_alignment_vs_competence(
    path: Path, models: pd.DataFrame, levels: pd.DataFrame, metrics: list[str]
) -> Path:
    """Top: mean calibrated alignment among the models of each level against the level's mean test accuracy
    (95% bootstrap intervals over models). Bottom: each model's mean calibrated alignment with all others
    against its test accuracy, by family."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.6 * len(metrics), 8), squeeze=False)
    styles = _family_styles(list(dict.fromkeys(models.family)))
    for col, metric in enumerate(metrics):
        top, bottom = axes[0, col], axes[1, col]
        lv = levels[levels.metric == metric]
        yerr = np.vstack([lv["mean"] - lv["low"], lv["high"] - lv["mean"]])
        top.errorbar(lv.test_acc, lv["mean"], yerr=yerr, fmt="o-", capsize=4, color="k")
        for row in lv.itertuples():
            top.annotate(f"level {row.bin} ({row.tasks_solved:.1f} tasks)", (row.test_acc, row.mean),
                         textcoords="offset points", xytext=(6, -12), fontsize=8)  # fmt: skip
        top.set(xlabel="mean test accuracy of the level", ylabel=f"{metric}: calibrated, within level",
                title=f"{metric}: alignment among models of one level")  # fmt: skip
        column = f"{metric}_mean_calibrated"
        for family, (colour, marker) in styles.items():
            sub = models[models.family == family]
            bottom.scatter(
                sub.test_acc, sub[column], c=colour, marker=marker, label=family, s=20 + 20 * sub.level
            )
        bottom.set(xlabel="test accuracy", ylabel=f"{metric}: mean calibrated alignment with all others",
                   title="per model (marker size: level)")  # fmt: skip
        bottom.legend(fontsize=8)
    fig.suptitle("Are more competent models more aligned? (digits, calibrated alignment)")
    fig.tight_layout()
    return _save(fig, path)


def classical_mds(dissimilarity: np.ndarray, dims: int = 2) -> tuple[np.ndarray, float]:
    """Torgerson's classical MDS: ``(N, dims)`` coordinates whose distances approximate ``dissimilarity``,
    and the share of the positive eigenvalues' sum that the ``dims`` kept dimensions carry."""
    n = len(dissimilarity)
    centring = np.eye(n) - 1.0 / n
    gram = -0.5 * centring @ (dissimilarity**2) @ centring
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(values)[::-1][:dims]
    kept = values[order].clip(min=0)
    positive = values[values > 0].sum()
    return vectors[:, order] * np.sqrt(kept), float(kept.sum() / positive) if positive > 0 else float("nan")


def plot_embedding(path: Path, matrix: pd.DataFrame, models: pd.DataFrame, metric: str) -> Path:
    """Classical MDS of the models with dissimilarity 1 - calibrated alignment; colour and marker by family,
    size by level."""
    plt = _pyplot()
    dissimilarity = 1.0 - matrix.to_numpy(dtype=float)
    dissimilarity = np.nan_to_num((dissimilarity + dissimilarity.T) / 2, nan=1.0)
    np.fill_diagonal(dissimilarity, 0.0)
    xy, explained = classical_mds(dissimilarity)
    table = models.set_index("model").loc[matrix.index]
    styles = _family_styles(list(dict.fromkeys(models.family)))  # the suite's order, as in the other figure
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for family, (colour, marker) in styles.items():
        where = (table.family == family).to_numpy()
        ax.scatter(
            xy[where, 0], xy[where, 1], c=colour, marker=marker, s=30 + 40 * table.level[where], label=family
        )
    for (x, y), (_, row) in zip(xy, table.iterrows(), strict=True):
        ax.annotate(
            f"e{row.epochs}s{row.seed}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    ax.set(
        title=f"models by alignment: classical MDS of 1 - calibrated {metric} ({explained:.0%} of variance)",
        xlabel="MDS 1",
        ylabel="MDS 2",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_stitching(path: Path, cells: pd.DataFrame) -> Path:
    """Stitching penalty (target - stitched accuracy, 95% interval) against the pair's mean test accuracy,
    by kind of pair; the least-squares adapter's penalty before training beside it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for kind, marker in (("cross_arch", "o"), ("same_arch", "s")):
        sub = cells[cells.pair_kind == kind]
        if sub.empty:
            continue
        label = "cross-family" if kind == "cross_arch" else "seed pairs"
        yerr = np.vstack([sub.penalty - sub.penalty_low, sub.penalty_high - sub.penalty]) * 100
        axes[0].errorbar(sub.pair_competence * 100, sub.penalty * 100, yerr=yerr, fmt=marker, capsize=2,
                         label=label, alpha=0.8)  # fmt: skip
        axes[1].scatter(
            sub.pair_competence * 100, (sub.target_acc - sub.lstsq_acc) * 100, marker=marker, label=label
        )
    for ax, what in (
        (axes[0], "penalty after training (points)"),
        (axes[1], "lstsq penalty, no training (points)"),
    ):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="pair competence: mean test accuracy of the two models (%)", ylabel=what)
        ax.legend(fontsize=8)
    fig.suptitle("Stitching at matched depth against the competence of the pair")
    fig.tight_layout()
    return _save(fig, path)
