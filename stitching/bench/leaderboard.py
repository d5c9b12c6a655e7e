"""Tidy tables and leaderboards built from cell records only (never edited by hand).

A leaderboard row averages the cells (seed pairs) of one setup: the same pair, cuts, adapter, init,
objective, training recipe and suite version, and the same everything else of the config but the seeds
(``setup``, a hash: a store that holds cells of an edited suite never averages old and new ones). Its
intervals come from a hierarchical bootstrap over the cells' kept test predictions
(``stitching.stats.hierarchical_bootstrap``), its rank from ``stitching.stats.rank_groups`` on the penalty
intervals (overlapping intervals share a rank).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stitching._utils import atomic_path, atomic_write, stable_hash
from stitching.bench.best_pairs import best_cut_pairs
from stitching.bench.columns import CELL_INTERVALS, DESCRIPTIVE, ID_COLUMNS
from stitching.bench.controls import PREFIXES
from stitching.bench.plots import write_plots
from stitching.bench.statistics import LEVEL, N_RESAMPLES, SEED
from stitching.bench.store import ResultStore
from stitching.stats import distinguishable_from_zero, hierarchical_bootstrap, rank_groups

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
    "objective",
    "recipe",
    "suite_version",
    "setup",
]
"""A leaderboard row: cells equal in all of these (they differ only in their seeds)."""
SEED_FIELDS = ("seed", "checkpoint")
"""Fields of a base model that change with its seed (a checkpoint template names one file per seed)."""
HEADLINE = [
    "stitched_acc",
    "penalty",
    "control_penalty",
    "noise_penalty",
    "lstsq_acc",
    "target_acc",
    "source_acc",
    "agreement",
]
ROW_INTERVALS = {
    "stitched_acc": ("stitched", None),
    "penalty": ("target", "stitched"),
    **{f"{prefix}_penalty": ("target", control) for control, prefix in PREFIXES.items()},
}
"""Metrics with a row interval -> the prediction names they come from (an accuracy, or a difference a - b)."""
SELF_FLAG = "self-stitch penalty ≠ 0: harness problem?"
UNCONVERGED_FLAG = "unconverged"
DIVERGED_FLAG = "diverged"


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: identifying config columns, every metric, the records' intervals
    (``<metric>_low``/``<metric>_high``, NaN for records without statistics), training convergence,
    adapter size and total time."""
    return pd.DataFrame([_cell_row(r) for r in records])


def _cell_row(r: dict[str, Any]) -> dict[str, Any]:
    c = r["config"]
    statistics = r.get("statistics") or {}
    intervals = statistics.get("intervals") or {}
    bounds = {}
    for metric in sorted(set(CELL_INTERVALS) | set(intervals)):
        low, high = intervals.get(metric, (math.nan, math.nan))
        bounds[f"{metric}_low"], bounds[f"{metric}_high"] = float(low), float(high)
    return {
        "cell_id": r["cell_id"],
        "suite": r["suite"]["name"],
        "suite_version": str(r["suite"]["version"]),
        "setup": setup_key(c),
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
        "objective": c.get("objective", "task"),
        "recipe": recipe_label(c.get("recipe")),
        "stitch_seed": c["stitch_seed"],
        "converged": (r.get("training") or {}).get("converged"),
        "diverged": (r.get("training") or {}).get("diverged_epoch") is not None,
        "adapter_params": r.get("adapter_params"),
        "seconds": r["timings"]["total"],
        "n_test_images": statistics.get("n_images", math.nan),
        "test_note": statistics.get("note"),
        "penalty_p": math.nan,
        **{name: math.nan if value is None else value for name, value in r["metrics"].items()},
        **bounds,
    }


def setup_key(config: Mapping[str, Any]) -> str:
    """8 hex digits over a cell's config without its seeds: cells that differ only in seeds share it."""
    setup = {k: v for k, v in config.items() if k != "stitch_seed"}
    for side in ("source", "target"):
        if isinstance(setup.get(side), Mapping):
            setup[side] = {k: v for k, v in setup[side].items() if k not in SEED_FIELDS}
    return stable_hash(setup, 8)


def _adapter_label(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "default"


_RECIPE_DEFAULTS = {"weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}


def recipe_label(recipe: Mapping[str, Any] | None) -> str:
    """A compact label of a training recipe, e.g. ``adamw lr=0.001 e40 p5`` (weight decay, schedule and
    batch size only when not the defaults; ``p`` the patience, absent without early stopping)."""
    if not recipe:
        return "default"
    recipe = dict(recipe)
    parts = [str(recipe.pop("optimizer", "adamw")), f"lr={recipe.pop('lr', 1e-3):g}"]
    parts.append(f"e{recipe.pop('epochs', '?')}")
    patience = recipe.pop("patience", None)
    if patience is not None:
        parts.append(f"p{patience}")
    for key, default in _RECIPE_DEFAULTS.items():
        value = recipe.pop(key, default)
        if value != default:
            parts.append(f"{'wd' if key == 'weight_decay' else 'bs' if key == 'batch_size' else ''}{value}")
    parts += [f"{k}={v}" for k, v in sorted(recipe.items())]
    return " ".join(parts)


def _mean_metrics(frame: pd.DataFrame) -> list[str]:
    """The metric columns a row averages (headline first): every float column that is not descriptive."""
    rest = [
        m
        for m in frame.columns
        if m not in HEADLINE and m not in ID_COLUMNS and m not in DESCRIPTIVE and frame[m].dtype.kind == "f"
    ]
    return [m for m in HEADLINE if m in frame] + rest


def leaderboard(frame: pd.DataFrame, store: ResultStore | None = None) -> pd.DataFrame:
    """One row per setup (``GROUP_COLUMNS``): mean and standard deviation over its cells, 95% intervals
    (``<m>_low``/``<m>_high``) for stitched accuracy and the penalties, shared ranks, flags and ``n``.

    Intervals: hierarchical bootstrap (seeds x images) over the row's kept predictions in ``store``; without
    them, the record's own intervals for a one-cell row, else NaN. Ranks: ``rank_groups`` on the penalty
    intervals (a row without an interval is ranked by its mean alone); sorted by (rank, penalty).
    """
    group = [c for c in GROUP_COLUMNS if c in frame]
    metrics = _mean_metrics(frame)
    grouped = frame.groupby(group, dropna=False)
    table = grouped[metrics].mean().add_suffix("_mean").join(grouped[metrics].std(ddof=0).add_suffix("_std"))
    summaries = pd.DataFrame([_row_summary(cells, store) for _, cells in grouped], index=table.index)
    table = table.join(summaries)
    table["n"] = grouped.size()
    interval_cols = [f"{m}_{s}" for m in metrics if m in ROW_INTERVALS for s in ("low", "high")]
    table[interval_cols] = table[interval_cols].astype(float)
    ordered = [
        f"{m}_{s}" for m in metrics for s in ("mean", "std", "low", "high") if f"{m}_{s}" in table.columns
    ]
    table = table[[*ordered, "unconverged", "diverged", "note", "n"]].reset_index()
    table.insert(0, "rank", _ranks(table))
    rows = [r for _, r in table.iterrows()]
    table.insert(table.columns.get_loc("unconverged"), "vs_target", [_vs_target(r) for r in rows])
    table.insert(table.columns.get_loc("unconverged"), "flag", [_flag(r) for r in rows])
    table = table.sort_values(["rank", "penalty_mean", "source", "target", "source_depth"], kind="mergesort")
    return table.reset_index(drop=True)


def _row_summary(cells: pd.DataFrame, store: ResultStore | None) -> dict[str, Any]:
    """Intervals, unconverged count and test-set note of the cells of one row."""
    intervals = _bootstrap_row(list(cells["cell_id"]), store) if store is not None else None
    if intervals is None and len(cells) == 1:
        cell = cells.iloc[0]
        intervals = {
            m: (cell.get(f"{m}_low", math.nan), cell.get(f"{m}_high", math.nan)) for m in ROW_INTERVALS
        }
    out: dict[str, Any] = {}
    for metric in ROW_INTERVALS:
        low, high = (intervals or {}).get(metric, (math.nan, math.nan))
        out[f"{metric}_low"], out[f"{metric}_high"] = float(low), float(high)
    converged = cells["converged"] if "converged" in cells else []
    out["unconverged"] = int(sum(1 for v in converged if v is not None and not _isnan(v) and not bool(v)))
    out["diverged"] = int(sum(v is True for v in cells["diverged"])) if "diverged" in cells else 0
    notes = [n for n in cells.get("test_note", []) if isinstance(n, str) and n]
    out["note"] = notes[0] if notes else None
    return out


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _bootstrap_row(cell_ids: list[str], store: ResultStore) -> dict[str, tuple[float, float]] | None:
    """Hierarchical bootstrap intervals (cells as groups, shared test images) of ``ROW_INTERVALS`` from the
    kept predictions; None when a cell has none, or the cells were not scored on the same images."""
    predictions = [store.predictions(cell_id) for cell_id in cell_ids]
    if any(p is None or "labels" not in p for p in predictions):
        return None
    labels = predictions[0]["labels"]
    if any(not np.array_equal(p["labels"], labels) for p in predictions[1:]):
        return None
    names = sorted(set.intersection(*(set(p) for p in predictions)) - {"labels"})
    if not {"target", "stitched"} <= set(names):
        return None
    groups = [{name: p[name] == labels for name in names} for p in predictions]
    differences = {m: pair for m, pair in ROW_INTERVALS.items() if pair[1] is not None and pair[1] in names}
    try:
        result = hierarchical_bootstrap(
            groups, differences=differences, n_resamples=N_RESAMPLES, seed=SEED, level=LEVEL
        )
    except ValueError:
        return None
    out = {m: (iv.low, iv.high) for m, iv in result.differences.items()}
    out["stitched_acc"] = (result.accuracy["stitched"].low, result.accuracy["stitched"].high)
    return out


def _ranks(table: pd.DataFrame) -> list[int]:
    """Shared ranks from the penalty intervals (``rank_groups``); a row without an interval is taken as
    its point estimate, a row without a penalty comes last."""
    rows = []
    for i, r in table.iterrows():
        estimate = r["penalty_mean"]
        low, high = r.get("penalty_low", math.nan), r.get("penalty_high", math.nan)
        if pd.isna(estimate) or r.get("diverged", 0) > 0:  # a diverged cell: the row is ranked last
            continue
        if pd.isna(low) or pd.isna(high):
            low = high = estimate
        rows.append((str(i), float(estimate), float(low), float(high)))
    ranked = {row.name: row.rank for row in rank_groups(rows, lower_is_better=True)}
    last = max(ranked.values(), default=0) + 1
    return [ranked.get(str(i), last) for i in table.index]


def _has_interval(row: Mapping[str, Any], metric: str = "penalty") -> bool:
    low, high = row.get(f"{metric}_low", math.nan), row.get(f"{metric}_high", math.nan)
    return not (pd.isna(low) or pd.isna(high))


def _vs_target(row: Mapping[str, Any]) -> str:
    """``indistinguishable`` when the penalty interval contains 0, else ``worse`` or ``better``."""
    if not _has_interval(row):
        return "no interval"
    if not distinguishable_from_zero(row["penalty_low"], row["penalty_high"]):
        return "indistinguishable"
    return "worse" if row["penalty_low"] > 0 else "better"


def _flag(row: Mapping[str, Any]) -> str:
    flags = []
    if row.get("pair_kind") == "self" and _vs_target(row) in ("worse", "better"):
        flags.append(SELF_FLAG)
    if row.get("unconverged", 0) > 0:
        flags.append(UNCONVERGED_FLAG)
    if row.get("diverged", 0) > 0:
        flags.append(f"{DIVERGED_FLAG} ({row['diverged']} of {row['n']} cells: means over the others)")
    return "; ".join(flags)


_VARIANT = ("adapter", "init", "objective", "recipe", "suite_version", "setup")


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """A compact Markdown leaderboard in percentage points, with 95% intervals, shared ranks and flags."""
    varying = [c for c in _VARIANT if c in table and table[c].nunique(dropna=False) > 1 and c != "setup"]
    shown = [c for c in GROUP_COLUMNS if c in table and c != "setup"]
    if "setup" in table and table.duplicated(shown).any():  # rows told apart by the setup hash alone
        varying.append("setup")
    lines = [f"# {title}", "", _HOW_TO_READ, ""]
    notes = sorted({n for n in table.get("note", []) if isinstance(n, str) and n})
    lines += [f"**Note:** {n}." for n in notes] + ([""] if notes else [])
    if "penalty_low" not in table or table["penalty_low"].isna().any():
        lines += [_NO_INTERVAL, ""]
    setup = " setup |" if varying else ""
    lines += [
        f"| rank | source → target | kind | cuts (depth) |{setup} stitched acc [CI] | penalty [CI] | "
        "vs target | noise penalty | control penalty | lstsq acc | flags | n |",
        "|---:|---|---|---|" + ("---|" if varying else "") + "---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for _, r in table.iterrows():
        cuts = f"{r['source_cut']} ({r['source_depth']:.2f}) → {r['target_cut']} ({r['target_depth']:.2f})"
        variant = f" {', '.join(str(r[c]) for c in varying)} |" if varying else ""
        lines.append(
            f"| {r['rank']} | {r['source']} → {r['target']} | {r['pair_kind']} | {cuts} |{variant} "
            f"{_ci(r, 'stitched_acc')} | {_ci(r, 'penalty')} | {r.get('vs_target', '')} | "
            f"{_ci(r, 'noise_penalty')} | {_ci(r, 'control_penalty')} | {_ci(r, 'lstsq_acc')} | "
            f"{r.get('flag', '') or ''} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


_HOW_TO_READ = (
    "Each row averages the cells (seed pairs) of one setup; numbers are in percentage points. "
    "**penalty** = target accuracy − stitched accuracy (lower is better). Brackets are 95% intervals "
    "from a hierarchical bootstrap over seeds and test images (one cell: the paired bootstrap over "
    "images); **rank** is shared by rows whose penalty intervals overlap the interval of their group's "
    "best row, so equal ranks are not distinguishable. **vs target**: `indistinguishable` when the "
    "penalty interval contains 0, else `worse`/`better` than the target alone. Controls, stitched exactly "
    "like the source: **noise penalty** with clustered noise in place of the source (one Gaussian cluster "
    "per class: it carries the label and nothing else; Smith, Mannering & Marcu, ICML 2025), **control "
    "penalty** with a randomly initialised source front. **lstsq acc**: the closed-form least-squares "
    "adapter before any training. Flags: a self-stitch whose penalty interval excludes 0 (a harness "
    "problem?), cells still improving when their epoch budget ran out (`unconverged`), cells whose adapter "
    "training diverged (`diverged`: no accuracy; such rows are ranked last)."
)


_NO_INTERVAL = (
    "Rows marked `no interval` have neither kept predictions for all their cells nor, for a single cell, "
    "the record's own intervals (records written before `stitching.cell/2`): they show mean ± std over "
    "seeds and are ranked by their mean alone."
)


def _ci(row: Mapping[str, Any], metric: str) -> str:
    """``mean [low, high]`` in points (``mean ± std`` without an interval; ``–`` without the metric)."""
    mean = row.get(f"{metric}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    if _has_interval(row, metric):
        return f"{100 * mean:.1f} [{100 * row[f'{metric}_low']:.1f}, {100 * row[f'{metric}_high']:.1f}]"
    std = row.get(f"{metric}_std")
    if std is None or pd.isna(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def write_leaderboard(results_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``cells.csv``, ``leaderboard.csv``, ``leaderboard.md`` and the plots into ``results_dir``."""
    results_dir = Path(results_dir)
    store = ResultStore(results_dir)
    frame = records_to_frame(store.records())
    if frame.empty:
        raise FileNotFoundError(f"no cell records under {results_dir / 'cells'}; run `stitching bench` first")
    table = leaderboard(frame, store)
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
    best = best_cut_pairs(store, frame)
    if not best.empty:  # a matrix of cut pairs: the best pair per metric, calibrated against the max-null
        paths["best_cut_pairs"] = results_dir / "best_cut_pairs.csv"
        with atomic_path(paths["best_cut_pairs"]) as tmp:
            best.to_csv(tmp, index=False)
    if plots:
        paths.update(write_plots(frame, results_dir, table=table))
    return paths
