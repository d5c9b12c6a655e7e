"""Run a suite: expand it, skip finished cells, train the base models they need, hand the cells to an
executor, report progress.

Progress comes in two bars with honest ETAs: ``base models`` (one tick per model the store still has to
train) and then ``cells``, whose time per cell no longer includes base-model training. With the SLURM
executor the base models are left to the jobs (the submitting host may have no accelerator): the first job
that needs a model trains it under the store's file lock and the others wait for it, as before.
"""

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
from stitching.zoo import ModelSource, get_trained, is_stored

DEFAULT_SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "digits.yaml"


def results_dir_for(suite: Suite, results_root: str | Path = "results") -> Path:
    return Path(results_root) / suite.name


def group_key(cell: dict[str, Any]) -> str:
    """Cells with the same source model and cut share cached activations: run them in one job."""
    config = cell.config
    return f"{config.source.key}:{config.source.seed}:{config.source_cut}"


def pending_cells(cells: list[dict], store: ResultStore) -> list[dict]:
    done = store.finished_ids()
    return [c for c in cells if c.cell_id not in done]


def _base_source(base: Any) -> ModelSource:
    """The store's ``ModelSource`` of a cell's source or target (a ``BaseModel`` or its dict form)."""
    if hasattr(base, "source"):
        return base.source()
    return ModelSource(
        base["name"], base.get("pretrained", False), base.get("checkpoint"), base.get("train"), base["seed"]
    )


def base_models_to_train(cells: list[Any]) -> list[ModelSource]:
    """The distinct base models of ``cells`` that have a ``train`` config and are not in the store yet, in
    the order the cells first need them."""
    found: dict[tuple, ModelSource] = {}
    for cell in cells:
        config = cell["config"] if isinstance(cell, dict) else cell.config
        for side in ("source", "target"):
            source = _base_source(config[side] if isinstance(config, dict) else getattr(config, side))
            if source.train:
                found.setdefault((source.name, source.seed, source.train), source)
    return [s for s in found.values() if not is_stored(s)]


def train_base_models(cells: list[Any], progress: bool = True) -> list[ModelSource]:
    """Train, one after another in this process, the base models ``cells`` need that the store lacks, under
    a ``base models`` bar (one tick per model); returns those it trained."""
    from tqdm.auto import tqdm

    missing = base_models_to_train(cells)
    if missing:
        with tqdm(missing, desc="base models", unit="model", smoothing=0, disable=not progress) as bar:
            for source in bar:
                bar.set_postfix_str(f"{source.name} seed {source.seed}")
                get_trained(source)
    return missing


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
    if todo and getattr(executor, "name", None) != "slurm":
        train_base_models(todo, progress=getattr(executor, "progress", True))
    if todo:
        fn = functools.partial(run_cell, store_dir=str(out_dir), runtime=runtime)
        report = executor.run(todo, fn, wait=wait, group_key=group_key, workdir=out_dir)
    return {
        "suite": suite.name,
        "results_dir": str(out_dir),
        "cells": len(cells),
        "ran": len(todo),
        "finished": len(store.finished_ids() & {c.cell_id for c in cells}),
        "failed": dict(report.errors) if report else {},
        "pending": dict(report.pending) if report else {},
        "seconds": time.perf_counter() - started,
    }
