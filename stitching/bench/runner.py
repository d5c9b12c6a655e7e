"""Run a suite: expand it, skip finished cells, hand the rest to an executor, report progress."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from stitching.bench.cell import run_cell
from stitching.bench.grid import expand_suite
from stitching.bench.runtime import Runtime
from stitching.bench.store import ResultStore
from stitching.bench.suite import Suite, load_suite

DEFAULT_SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "digits.yaml"


def results_dir_for(suite: Suite, results_root: str | Path = "results") -> Path:
    return Path(results_root) / suite.name


def group_key(cell: dict[str, Any]) -> str:
    """Cells with the same source model and cut share cached activations: run them in one job."""
    config = cell["config"]
    return f"{config['source']['key']}:{config['source']['seed']}:{config['source_cut']}"


def pending_cells(cells: list[dict], store: ResultStore) -> list[dict]:
    done = store.finished_ids()
    return [c for c in cells if c["cell_id"] not in done]


def run_suite(
    suite: Suite | str | Path,
    results_root: str | Path = "results",
    executor: Any = None,
    wait: bool = True,
    cells: list[dict] | None = None,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell of ``suite``; returns counts and the results directory.

    Re-running skips finished cells (their records exist), so an interrupted run resumes where it stopped.
    ``cells`` restricts the run to a subset of the suite's expanded cells; ``runtime`` sets the devices
    (several per cell: DDP) and speed switches the cells run with.
    """
    from stitching.launch import InlineExecutor

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if cells is None:
        cells = expand_suite(suite)  # raises SuiteError listing every problem before any training
    out_dir = results_dir_for(suite, results_root)
    store = ResultStore(out_dir)
    todo = sorted(pending_cells(cells, store), key=group_key)
    started = time.perf_counter()
    executor = executor or InlineExecutor()
    print(
        f"suite {suite.name} v{suite.version}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
        f"{len(todo)} to run -> {out_dir}"
    )
    report = None
    if todo:
        fn = functools.partial(run_cell, store_dir=str(out_dir), runtime=runtime)
        report = executor.run(todo, fn, wait=wait, group_key=group_key, workdir=out_dir)
    return {
        "suite": suite.name,
        "results_dir": str(out_dir),
        "cells": len(cells),
        "ran": len(todo),
        "finished": len(store.finished_ids() & {c["cell_id"] for c in cells}),
        "failed": dict(report.errors) if report else {},
        "pending": dict(report.pending) if report else {},
        "seconds": time.perf_counter() - started,
    }
