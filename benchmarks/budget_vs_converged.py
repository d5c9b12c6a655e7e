"""How much of each digits penalty was the adapter budget: the same (pair, depth) rows of two result stores,
e.g. the 8-epoch default suite v1 (git history) against suite v2 (trained to convergence).

    git show <v1 commit>:results/digits/cells ...   # or any results dir of suite v1
    python benchmarks/budget_vs_converged.py OLD_RESULTS_DIR NEW_RESULTS_DIR

Prints, per (source -> target, kind, depth), the mean penalty in points of both and the change, and the
MobileNetV3 seed pairs first.
"""

from __future__ import annotations

import argparse

import pandas as pd

from stitching.bench.leaderboard import records_to_frame
from stitching.bench.store import ResultStore

KEYS = ["source", "target", "pair_kind", "source_depth"]


def penalties(results_dir: str) -> pd.DataFrame:
    frame = records_to_frame(ResultStore(results_dir).records())
    return frame.groupby(KEYS)[["penalty", "control_penalty"]].mean() * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    table = penalties(args.old).join(penalties(args.new), lsuffix="_old", rsuffix="_new", how="inner")
    table["change"] = table["penalty_new"] - table["penalty_old"]
    mobilenet = table.index.get_level_values("source") == "mobilenet"
    same = table.index.get_level_values("pair_kind") == "same_arch"
    ordered = pd.concat([table[mobilenet & same], table[~(mobilenet & same)]])
    print(ordered.round(1).to_string())
    by_kind = table.groupby(level="pair_kind")[["penalty_old", "penalty_new", "change"]].mean().round(1)
    print()
    print(by_kind.to_string())


if __name__ == "__main__":
    main()
