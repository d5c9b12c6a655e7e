"""Outputs of the competence suite: CSVs, figures and a README whose sentences follow the numbers (each
claim states its interval or p-value, and says so when a difference cannot be told from noise)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from stitching._utils import atomic_write
from stitching.prh.align import SYMMETRIC, symmetric, write_alignment
from stitching.prh.competence import CompetenceSuite
from stitching.prh.competence_stats import bin_alignment, bin_difference, mean_alignment, spearman_permutation

ALPHA = 0.05


def matrix(result: Any, metric: str, value: str) -> pd.DataFrame:
    """The engine's N x N matrix of ``value``, filled symmetrically for symmetric metrics."""
    frame = result.matrix(metric, value)
    return symmetric(frame) if metric in SYMMETRIC else frame


def summarise(models: pd.DataFrame, alignment: Any, metrics: list[str]) -> dict[str, pd.DataFrame]:
    """Per-model mean alignment (added to ``models``), per-level alignment with intervals, the top-minus-
    bottom level difference and rank correlations with competence."""
    models = models.copy()
    levels, tests = [], []
    bins = models.set_index("model").level
    per_level = models.groupby("level")[["test_acc", "tasks_solved", "epochs"]].mean()
    top, bottom = bins.max(), bins.min()
    for metric in metrics:
        calibrated = matrix(alignment, metric, "calibrated")
        models[f"{metric}_mean_calibrated"] = mean_alignment(calibrated).loc[models.model].to_numpy()
        models[f"{metric}_mean_score"] = (
            mean_alignment(matrix(alignment, metric, "score")).loc[models.model].to_numpy()
        )
        lv = bin_alignment(calibrated, bins).assign(metric=metric)
        levels.append(lv.join(per_level, on="bin"))
        if top != bottom:
            diff = bin_difference(calibrated, bins, top, bottom, models.set_index("model").family)
            tests.append(
                {"metric": metric, "test": f"within-level alignment, level {top} - level {bottom}", **diff}
            )
        for competence in ("test_acc", "tasks_solved") if len(models) >= 3 else ():
            rho = spearman_permutation(models[competence], models[f"{metric}_mean_calibrated"], models.family)
            tests.append({"metric": metric, "test": f"spearman({competence}, mean calibrated alignment), "
                          "permuted within family", "difference": rho["rho"], "p": rho["p"]})  # fmt: skip
    return {"models": models, "levels": pd.concat(levels, ignore_index=True), "tests": pd.DataFrame(tests)}


def stitching_tests(cells: pd.DataFrame) -> pd.DataFrame:
    """Rank correlation of stitching penalty with pair competence, overall and per kind of pair (cells are
    permuted within kind for the overall test)."""
    rows = []
    if len(cells) < 3:
        return pd.DataFrame(rows)
    for what in ("penalty", "lstsq_penalty"):
        values = cells.penalty if what == "penalty" else cells.target_acc - cells.lstsq_acc
        r = spearman_permutation(cells.pair_competence, values, cells.pair_kind)
        rows.append({"kind": "all", "value": what, "rho": r["rho"], "p": r["p"], "n": r["n"]})
        for kind, sub in cells.groupby("pair_kind"):
            if len(sub) >= 3:
                v = values[sub.index]
                r = spearman_permutation(sub.pair_competence, v)
                rows.append({"kind": kind, "value": what, "rho": r["rho"], "p": r["p"], "n": r["n"]})
    return pd.DataFrame(rows)


def write_outputs(out: Path, suite: CompetenceSuite, result: Any) -> list[Path]:
    """CSVs, figures and README.md of a run in ``out``."""
    from stitching.prh.competence_plots import plot_alignment_vs_competence, plot_embedding, plot_stitching

    metrics = list(suite.alignment.metrics)
    summary = summarise(result.models, result.alignment, metrics)
    order = list(summary["models"].sort_values(["level", "family", "seed"]).model)
    written = []
    written += write_alignment(out / "alignment", result.alignment, order, layer_plots=False)
    for name in ("models", "levels", "tests"):
        written.append(
            atomic_write(out / f"{name}.csv", summary[name].to_csv(index=False, float_format="%.4g"))
        )
    written.append(atomic_write(out / "probes.csv", result.probes.to_csv(float_format="%.4g")))
    written.append(
        plot_alignment_vs_competence(
            out / "alignment_vs_competence.png", summary["models"], summary["levels"], metrics
        )
    )
    written.append(
        plot_embedding(
            out / "embedding.png",
            matrix(result.alignment, metrics[0], "calibrated").loc[order, order],
            summary["models"],
            metrics[0],
        )
    )
    stitch = pd.DataFrame()
    if not result.stitching.empty:
        cells = result.stitching.reset_index(drop=True)
        stitch = stitching_tests(cells)
        keep = [
            c
            for c in cells.columns
            if not c.startswith(("control", "noise")) and c not in ("suite", "suite_version")
        ]
        written.append(
            atomic_write(out / "stitching.csv", cells[keep].to_csv(index=False, float_format="%.4g"))
        )
        written.append(
            atomic_write(out / "stitching_tests.csv", stitch.to_csv(index=False, float_format="%.4g"))
        )
        written.append(plot_stitching(out / "stitching_vs_competence.png", cells))
    from stitching.prh.competence_readme import readme

    text = readme(suite, summary, result, stitch)
    written.append(atomic_write(out / "README.md", text))
    atomic_write(out / "suite.json", pd.Series(asdict(suite)).to_json(indent=2, default_handler=str))
    return written
