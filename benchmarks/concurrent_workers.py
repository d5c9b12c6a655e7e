"""What a second `stitching bench` on the same store saves: wall time of 1, 2, ... concurrent runs of one
suite, and how many cells were computed more than once (with per-cell claims: none).

Each run is a separate ``stitching bench`` process started at the same moment on one results directory (as
two users, or two SLURM array tasks, would). Duplicates are counted from the store itself: every record
write is an atomic replace, so a cell computed twice shows two different inodes of its record; the watcher
polls ``cells/`` every 50 ms (a cell takes seconds). Who computed what comes from each record's ``claim``.

    python benchmarks/concurrent_workers.py                 # a small suite of untrained mini_resnets
    python benchmarks/concurrent_workers.py --suite my.yaml --workers 1 2 3
    python benchmarks/concurrent_workers.py --toy 2 --cells 12 --workers 1 2 3

``--toy S``: each worker runs the same claim loop as ``stitching bench`` (``claims.claim_cell``, records
written by the store) over cells that take S seconds without using the CPU, as when each worker has its own
GPU or node: what claims cost and what a worker saves when the workers do not share one CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

SMALL_SUITE = {
    "name": "concurrent",
    "version": "1",
    "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"batch_size": 64}},
    "models": {"resnet": {"name": "mini_resnet", "seeds": [0, 1, 2]}},  # seeded, untrained: no base training
    "pairs": {"mode": "same_arch", "include_self": False},
    "cuts": {"depths": [0.5]},
    "adapters": [{"norm": "bn"}],
    "inits": ["lstsq"],
    "recipe": {"epochs": 2, "batch_size": 128},
    "metrics": ["linear_cka"],
    "metric_samples": 200,
    "permutations": 50,
}


TOY_WORKER = """
import sys, time
from stitching.bench import claims
from stitching.bench.record import make_record
from stitching.bench.store import ResultStore
store, seconds, n = ResultStore(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
pending = [f"toy{i:03d}" for i in range(n)]
while pending:
    elsewhere = []
    for cell_id in pending:
        claim, status = claims.claim_cell(store, cell_id)
        if status == "run":
            with claim:
                time.sleep(seconds)
                cell = {"cell_id": cell_id, "suite": {"name": "toy", "version": "1"}, "config": {}}
                record = make_record(cell, {"target_acc": 1.0}, {"train": seconds})
                store.write({**record, "claim": claim.describe()})
        elif status.startswith("elsewhere"):
            elsewhere.append(cell_id)
    claims.wait_released(claims.claims_dir(store.root), elsewhere, poll_s=0.05)
    pending = [c for c in elsewhere if not store.has(c)]
"""


def run(suite: Path | None, workers: int, results: Path, cache: Path, toy: tuple[float, int]) -> dict:
    """Start ``workers`` bench processes together; wall time, cells each computed, cells computed twice."""
    env = dict(os.environ, STITCHING_CACHE=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    if suite is None:
        cells_dir = results / "toy"
        cmd = [sys.executable, "-c", TOY_WORKER, str(cells_dir), str(toy[0]), str(toy[1])]
    else:
        cells_dir = results / yaml.safe_load(suite.read_text())["name"]
        cmd = [sys.executable, "-m", "stitching.cli", "bench", str(suite), "--results", str(results)]
        cmd.append("--no-leaderboard")
    start = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    writes: dict[str, set[int]] = {}
    while any(p.poll() is None for p in procs):
        for path in (cells_dir / "cells").glob("*.json"):
            try:
                writes.setdefault(path.stem, set()).add(path.stat().st_ino)
            except FileNotFoundError:
                continue
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    failed = [p.stderr.read()[-2000:] for p in procs if p.returncode != 0]
    if failed:
        raise SystemExit(f"a bench process failed:\n{failed[0]}")
    by_pid = Counter(json.loads(p.read_text())["claim"]["pid"] for p in (cells_dir / "cells").glob("*.json"))
    return {
        "workers": workers,
        "seconds": round(seconds, 1),
        "cells": len(writes),
        "computed_per_worker": sorted(by_pid.values(), reverse=True),
        "duplicated": sum(len(inodes) - 1 for inodes in writes.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, help="suite YAML (default: 6 cells of untrained mini_resnets)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--toy", type=float, metavar="S", help="toy cells of S seconds each (no CPU)")
    parser.add_argument("--cells", type=int, default=12, help="number of toy cells")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        suite = args.suite
        if suite is None and args.toy is None:
            suite = root / "small.yaml"
            suite.write_text(yaml.safe_dump(SMALL_SUITE))
        cache = root / "cache"
        results = []
        for workers in args.workers:
            results.append(run(suite, workers, root / f"results-{workers}", cache, (args.toy, args.cells)))
            print(json.dumps(results[-1]), flush=True)
    base = results[0]["seconds"]
    for r in results[1:]:
        saved = 100 * (1 - r["seconds"] / base)
        print(f"{r['workers']} workers: {r['seconds']} s vs {base} s ({saved:.0f}% saved), "
              f"{r['duplicated']} cells computed twice")  # fmt: skip


if __name__ == "__main__":
    main()
