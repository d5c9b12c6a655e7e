"""How long the leaderboard's statistics take: paired and hierarchical bootstraps of a digits-sized cell.

    python benchmarks/stats_speed.py     # prints the best of 5 runs of each, in milliseconds
"""

from __future__ import annotations

import time

import numpy as np

from stitching.stats import hierarchical_bootstrap, paired_bootstrap

NAMES = ("target", "source", "lstsq", "stitched", "control")


def main() -> None:
    rng = np.random.default_rng(0)
    cells = [{name: rng.random(270) < 0.9 for name in NAMES} for _ in range(4)]
    diffs = {"penalty": ("target", "stitched"), "control_penalty": ("target", "control")}
    runs = {
        "paired, 2000 x 270 images x 5 models": lambda: paired_bootstrap(cells[0], differences=diffs),
        "hierarchical, 4 seeds": lambda: hierarchical_bootstrap(cells, differences=diffs),
    }
    for label, run in runs.items():
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        print(f"{label:<50} {best * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
