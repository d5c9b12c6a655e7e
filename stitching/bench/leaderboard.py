"""Tidy tables and leaderboards built from cell records only (never edited by hand)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from stitching._utils import atomic_path, atomic_write
from stitching.bench.columns import ID_COLUMNS
from stitching.bench.store import ResultStore

GROUP_COLUMNS = [
    "source",
    "target",
    "pair_kind",
    "source_cut",
    "target_cut",
    "source_depth",
    "target_depth",
    "adapter",
    "init",
]
HEADLINE = [
    "stitched_acc",
    "penalty",
    "control_penalty",
    "lstsq_acc",
    "target_acc",
    "source_acc",
    "agreement",
]


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: identifying config columns, every metric, adapter size and total time."""
    rows = []
    for r in records:
        c = r["config"]
        rows.append(
            {
                "cell_id": r["cell_id"],
                "suite": r["suite"]["name"],
                "suite_version": r["suite"]["version"],
                "source": c["source"]["key"],
                "source_model": c["source"]["name"],
                "source_seed": c["source"]["seed"],
                "target": c["target"]["key"],
                "target_model": c["target"]["name"],
                "target_seed": c["target"]["seed"],
                "pair_kind": c["pair_kind"],
                "source_cut": c["source_cut"],
                "target_cut": c["target_cut"],
                "source_depth": c["source_depth"],
                "target_depth": c["target_depth"],
                "adapter": _adapter_label(c["adapter"]),
                "init": c["init"],
                "stitch_seed": c["stitch_seed"],
                "adapter_params": r.get("adapter_params"),
                "seconds": r["timings"]["total"],
                **r["metrics"],
            }
        )
    return pd.DataFrame(rows)


def _adapter_label(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "default"


def leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds per (pair, cuts, adapter, init), ranked by penalty."""
    metrics = [m for m in HEADLINE if m in frame] + [
        m for m in frame.columns if m not in HEADLINE and m not in ID_COLUMNS and frame[m].dtype.kind == "f"
    ]
    grouped = frame.groupby(GROUP_COLUMNS, dropna=False)[metrics]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_std"))
    table["n"] = grouped.size()
    ordered = [f"{m}_{s}" for m in metrics for s in ("mean", "std")] + ["n"]
    table = table[ordered].reset_index().sort_values(["penalty_mean", "source", "target", "source_depth"])
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """A compact Markdown leaderboard: mean ± std in percentage points."""
    lines = [
        f"# {title}",
        "",
        "Ranked by stitching penalty (target accuracy - stitched accuracy), mean ± std "
        "over seeds, in percentage points. `control` is the penalty with a randomly initialised source "
        "front; `lstsq` the accuracy of the closed-form adapter before any training.",
        "",
        "| rank | source → target | kind | cuts (depth) | stitched acc | penalty | control | lstsq acc | n |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples(index=False):
        r = row._asdict()
        cuts = f"{r['source_cut']} ({r['source_depth']:.2f}) → {r['target_cut']} ({r['target_depth']:.2f})"
        lines.append(
            f"| {r['rank']} | {r['source']} → {r['target']} | {r['pair_kind']} | {cuts} | "
            f"{_pm(r, 'stitched_acc')} | {_pm(r, 'penalty')} | {_pm(r, 'control_penalty')} | "
            f"{_pm(r, 'lstsq_acc')} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def _pm(row: dict, metric: str) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def write_leaderboard(results_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``cells.csv``, ``leaderboard.csv``, ``leaderboard.md`` and the plots into ``results_dir``."""
    results_dir = Path(results_dir)
    store = ResultStore(results_dir)
    frame = records_to_frame(store.records())
    if frame.empty:
        raise FileNotFoundError(f"no cell records under {results_dir / 'cells'}; run `stitching bench` first")
    table = leaderboard(frame)
    paths = {
        "cells": results_dir / "cells.csv",
        "leaderboard_csv": results_dir / "leaderboard.csv",
        "leaderboard_md": results_dir / "leaderboard.md",
    }
    with atomic_path(paths["cells"]) as tmp:
        frame.sort_values(["source", "target", "source_depth", "cell_id"]).to_csv(tmp, index=False)
    with atomic_path(paths["leaderboard_csv"]) as tmp:
        table.to_csv(tmp, index=False)
    suite = frame["suite"].iloc[0]
    atomic_write(paths["leaderboard_md"], to_markdown(table, f"Leaderboard: {suite}"))
    if plots:
        from stitching.bench.plots import write_plots

        paths.update(write_plots(frame, results_dir))
    return paths
