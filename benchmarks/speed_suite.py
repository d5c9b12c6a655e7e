"""Where a suite's time goes: base-model training, activation caching, adapter training, the rest.

Reads the cell records of a results directory (``timings`` per phase; base-model ``train_seconds`` from the
model store, counted once per model) and prints the shares, cells/hour, and the growth model

    total ~ models x base training + (models x cuts x splits) x front pass + cells x (adapter training + rest)

in which only the adapter-training term grows with the number of cells. With ``--run`` it first runs the
suite (``stitching bench``) and reports the run's wall time and peak resident memory (``VmHWM``).

    python benchmarks/speed_suite.py --run benchmarks/digits.yaml --results results
    python benchmarks/speed_suite.py --summarise results/digits
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

PHASES = {
    "activations": "activation caching",
    "train": "adapter training",
    "control": "random-source control (its caching + training when not fused)",
}


def summarise(results_dir: str | Path) -> dict:
    records = [json.loads(p.read_text()) for p in sorted(Path(results_dir, "cells").glob("*.json"))]
    if not records:
        raise SystemExit(f"no cell records under {results_dir}/cells")
    phases: dict[str, float] = defaultdict(float)
    models: dict[str, float] = {}
    for r in records:
        for phase, seconds in r["timings"].items():
            if phase not in ("total", "base_models"):  # base_models (load or train) is counted below, once
                phases[phase] += seconds
        for info in r.get("base_models", {}).values():
            if info.get("key"):
                models[info["key"]] = info.get("train_seconds", 0.0)
    base = sum(models.values())
    cells_total = sum(phases.values())
    # loading a stored model (everything in the base_models phase that was not training) is small; it is
    # folded into base-model training so that the shares add up to the wall time of the cells
    base = max(base, sum(r["timings"].get("base_models", 0.0) for r in records))
    total = base + cells_total
    shares = {"base-model training": base, **{PHASES.get(k, k): v for k, v in sorted(phases.items())}}
    return {
        "cells": len(records),
        "base_models": len(models),
        "seconds": total,
        "cells_per_hour": 3600 * len(records) / cells_total,
        "share": {k: v / total for k, v in shares.items()},
        "seconds_by_phase": shares,
        "adapter_seconds_per_cell": phases.get("train", 0.0) / len(records),
    }


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run this suite first")
    parser.add_argument("--results", default="results", help="results root for --run")
    parser.add_argument("--summarise", help="a results directory (results/<suite>)")
    args = parser.parse_args()
    if not (args.run or args.summarise):
        parser.error("give --summarise results/<suite> or --run SUITE")
    target = args.summarise
    if args.run:
        from stitching.bench.runner import run_suite

        started = time.perf_counter()
        report = run_suite(args.run, results_root=args.results)
        print(f"wall {time.perf_counter() - started:.0f} s, peak RSS {peak_rss_mb():.0f} MB, report {report}")
        target = report["results_dir"]
    print(json.dumps(summarise(target), indent=1))


if __name__ == "__main__":
    main()
