"""The README's summary of a digits-style results store: penalties by kind of pair with 95% intervals
(hierarchical bootstrap over the cells of a group and the test images), the two controls, the
training-free lstsq accuracy and how many cells converged; then Spearman's rho between stitched accuracy and
each alignment metric, raw and calibrated, over the non-self cells.

    python benchmarks/summary_table.py results/digits
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from stitching.bench.leaderboard import records_to_frame
from stitching.bench.store import ResultStore
from stitching.stats import hierarchical_bootstrap

CNNS = ("resnet", "convnext", "mobilenet")
DIFFS = {"penalty": ("target", "stitched"), "noise": ("target", "clustered_noise"),
         "control": ("target", "random_source")}  # fmt: skip


def groups(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    same = frame[frame.pair_kind == "same_arch"]
    cross = frame[frame.pair_kind == "cross_arch"]
    families = ("resnet", "vit", "convnext", "mobilenet")
    out = {f"{k} → {k} (seed pairs)": same[same.source == k] for k in families}
    out["self-stitches (all families)"] = frame[frame.pair_kind == "self"]
    out["CNN → CNN, cross-family (6 pairs)"] = cross[cross.source.isin(CNNS) & cross.target.isin(CNNS)]
    out["vit → CNNs (3 pairs)"] = cross[(cross.source == "vit")]
    out["CNNs → vit (3 pairs)"] = cross[(cross.target == "vit")]
    return out


def row(store: ResultStore, cells: pd.DataFrame) -> dict[str, str]:
    correct = []
    for cell_id in cells.cell_id:
        p = store.predictions(cell_id)
        correct.append({k: v == p["labels"] for k, v in p.items() if k != "labels"})
    result = hierarchical_bootstrap(correct, differences=DIFFS)
    out = {}
    for name in DIFFS:
        iv = result.differences[name].scaled(100)
        out[name] = f"{iv.estimate:.1f} [{iv.low:.1f}, {iv.high:.1f}]"
    out["lstsq acc"] = f"{100 * cells.lstsq_acc.mean():.1f}"
    out["converged"] = f"{int((cells.converged == True).sum())}/{len(cells)}"  # noqa: E712
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    args = parser.parse_args()
    store = ResultStore(args.results_dir)
    frame = records_to_frame(store.records())
    table = pd.DataFrame({name: row(store, cells) for name, cells in groups(frame).items()}).T
    print(table.to_string())
    rest = frame[frame.pair_kind != "self"]
    print(f"\nSpearman rho with stitched accuracy over {len(rest)} non-self cells (raw / calibrated):")
    for metric in ("linear_cka", "debiased_cka", "mutual_knn", "cknna", "procrustes", "svcca", "ridge_r2"):
        if metric in rest:
            raw = spearmanr(rest[metric], rest.stitched_acc, nan_policy="omit").statistic
            cal = spearmanr(rest.get(f"{metric}_calibrated", np.nan), rest.stitched_acc, nan_policy="omit")
            print(f"  {metric:<14} {raw:5.2f} / {cal.statistic:5.2f}   p < 0.05 in "
                  f"{int((rest[f'{metric}_p'] < 0.05).sum())}/{len(rest)} cells")  # fmt: skip


if __name__ == "__main__":
    main()
