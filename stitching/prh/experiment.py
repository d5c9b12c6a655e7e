"""The PRH colour experiment: a text encoder's features of colour names against their CIELAB coordinates.

Every hidden state of the encoder (embeddings, then each layer) is paired with the perceptual features (the
colours' CIELAB coordinates, column-centred) and scored with calibrated metrics (a permutation test per
layer, and the best layer against the null of the best over layers).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from stitching.metrics import permutation_test, permutation_test_max
from stitching.prh.colour import Colours, srgb_to_lab, xkcd_colours
from stitching.prh.plots import plot_alignment, plot_kernels
from stitching.prh.report import write_readme
from stitching.prh.text import load_minilm, text_features

KNN_METRICS = ("mutual_knn", "cknna")


@dataclass(frozen=True)
class ColourSettings:
    """Options of :func:`run_colour_experiment`."""

    metrics: tuple[str, ...] = ("mutual_knn", "linear_cka", "cknna")
    topk: int = 10
    """k of the k-NN metrics (their ``topk`` keyword)."""
    n_permutations: int = 1000
    seed: int = 0
    pooling: str = "mean"
    limit: int | None = None
    """Use the first ``limit`` colours only (None: all 949)."""
    batch_size: int = 256


def check_pairing(n_texts: int, n_colours: int, settings: ColourSettings) -> None:
    """Errors for unpaired inputs or ``k >= n``, raised before any feature is extracted."""
    if n_texts != n_colours:
        raise ValueError(
            f"colour experiment: the texts and the colours must pair up one to one, got {n_texts} names and "
            f"{n_colours} colours"
        )
    if any(m in KNN_METRICS for m in settings.metrics) and not 2 <= settings.topk < n_texts:
        raise ValueError(
            f"colour experiment: k-NN metrics need 2 <= k < n (samples), got k={settings.topk} and "
            f"n={n_texts}; use a smaller topk or more colours"
        )


def perceptual_features(rgb: Any) -> Tensor:
    """``(N, 3)`` float64 CIELAB coordinates, column-centred (linear CKA then sees Euclidean Lab geometry)."""
    lab = torch.as_tensor(srgb_to_lab(rgb), dtype=torch.float64)
    return lab - lab.mean(0)


def _kwargs(metric: str, settings: ColourSettings) -> dict[str, Any]:
    return {"topk": settings.topk} if metric in KNN_METRICS else {}


def _row(result: Any, layer: Any, kind: str) -> dict[str, Any]:
    return {
        "layer": layer,
        "metric": result.metric,
        "kind": kind,
        "score": result.score,
        "null_mean": result.null_mean,
        "null95": result.null95,
        "threshold": result.threshold,
        "p": result.p_value,
        "calibrated": result.calibrated,
    }


def alignment_table(layers: list[Tensor], perceptual: Tensor, settings: ColourSettings) -> pd.DataFrame:
    """One row per (layer, metric) permutation test, then one row per metric for the best layer."""
    rows = []
    opts = {"n_permutations": settings.n_permutations, "seed": settings.seed}
    for metric in settings.metrics:
        kwargs = _kwargs(metric, settings)
        for i, feats in enumerate(layers):
            result = permutation_test(metric, feats, perceptual, metric_kwargs=kwargs, **opts)
            rows.append(_row(result, i, "layer"))
        best = permutation_test_max(metric, layers, [perceptual], metric_kwargs=kwargs, **opts)
        rows.append(_row(best, best.best_pair[0], "best layer (max-null)"))
    return pd.DataFrame(rows)


def run_colour_experiment(
    out_dir: str | Path,
    settings: ColourSettings | None = None,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    colours: Colours | None = None,
    model_label: str = "all-MiniLM-L6-v2",
) -> pd.DataFrame:
    """Run the experiment and write ``alignment.csv``, ``kernels.png``, ``alignment_by_layer.png`` and
    ``README.md`` to ``out_dir``; returns the table. ``model``/``tokenizer`` default to the pinned MiniLM."""
    settings = settings or ColourSettings()
    colours = (colours or xkcd_colours()).subset(settings.limit)
    check_pairing(len(colours.names), colours.rgb.shape[0], settings)
    started = time.perf_counter()
    if model is None:
        model, tokenizer = load_minilm()
    perceptual = perceptual_features(colours.rgb)
    layers = text_features(model, tokenizer, colours.names, settings.pooling, settings.batch_size)
    features_s = time.perf_counter() - started
    table = alignment_table(layers, perceptual, settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "alignment.csv", index=False, float_format="%.6g")
    best = int(table[(table.kind != "layer") & (table.metric == settings.metrics[0])].layer.iloc[0])
    plot_kernels(out / "kernels.png", layers[best], perceptual, colours.rgb, f"{model_label}, layer {best}")
    plot_alignment(out / "alignment_by_layer.png", table, model_label)
    timing = {"features_s": features_s, "total_s": time.perf_counter() - started}
    info = {**asdict(settings), "n": len(colours.names), **timing}
    write_readme(out / "README.md", table, info, model_label)
    return table
