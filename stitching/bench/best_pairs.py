"""The best cut pair of a model pair, calibrated: taking the max over many cut pairs inflates a raw alignment
score (Groger, Wen & Brbic, ICML 2026), so the best pair is tested against the null of the max over all pairs.

For every (source model, target model) that a suite stitched at a full matrix of cut pairs (``cuts.mode:
matrix``), each alignment metric's best cut pair is scored with
:func:`stitching.metrics.permutation_test_max` over the reduced test activations that the cells kept
(``features/``): one permutation of the samples is applied to every pair in each null draw.
"""

from __future__ import annotations

import pandas as pd
import torch

from stitching.bench.store import ResultStore
from stitching.metrics import permutation_test_max

PAIR = ["source", "source_seed", "target", "target_seed", "suite_version"]
"""Columns of the cell table that identify a model pair (the adapter does not change alignment)."""


def best_cut_pairs(store: ResultStore, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model pair, metric): best source and target cut, raw score, the max-null's 95th
    percentile, p-value and calibrated score; empty when no pair was stitched at a matrix of cuts."""
    rows = []
    for key, cells in frame.groupby(PAIR):
        matrix = _matrix(store, cells)
        if matrix is None:
            continue
        (src_cuts, xs), (tgt_cuts, ys), config = matrix
        permutations = config.get("permutations", 1000)
        for metric in config["metrics"]:
            test = permutation_test_max(metric, xs, ys, n_permutations=permutations, seed=0)
            i, j = test.best_pair
            rows.append(
                {**dict(zip(PAIR, key, strict=True)), "metric": metric, "source_cut": src_cuts[i],
                 "target_cut": tgt_cuts[j], "score": test.score, "null95": test.null95, "p": test.p_value,
                 "calibrated": test.calibrated, "cut_pairs": len(xs) * len(ys)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _matrix(store: ResultStore, cells: pd.DataFrame):
    """The pair's kept activations per source cut and per target cut, if its cells cover every combination
    of at least two cuts on each side; else None."""
    src_cuts = list(cells.sort_values("source_depth")["source_cut"].drop_duplicates())
    tgt_cuts = list(cells.sort_values("target_depth")["target_cut"].drop_duplicates())
    combos = set(zip(cells["source_cut"], cells["target_cut"], strict=True))
    if len(src_cuts) < 2 or len(tgt_cuts) < 2 or len(combos) < len(src_cuts) * len(tgt_cuts):
        return None
    records = {cid: store.read(cid) for cid in cells["cell_id"]}
    if any(not r.get("features") or not r["config"]["metrics"] for r in records.values()):
        return None
    by_source = {r["config"]["source_cut"]: r["features"]["source"] for r in records.values()}
    by_target = {r["config"]["target_cut"]: r["features"]["target"] for r in records.values()}
    xs = [torch.from_numpy(store.features(by_source[c])).double() for c in src_cuts]
    ys = [torch.from_numpy(store.features(by_target[c])).double() for c in tgt_cuts]
    return (src_cuts, xs), (tgt_cuts, ys), next(iter(records.values()))["config"]
