"""Run a suite: expand it, skip finished cells, train the base models they need, hand the cells to an
executor, report progress.

Progress comes in two bars with honest ETAs: ``base models`` (one tick per model the store still has to
train) and then ``cells``, whose time per cell no longer includes base-model training. With the SLURM
executor the base models are left to the jobs (the submitting host may have no accelerator): the first job
that needs a model trains it under the store's file lock and the others wait for it, as before.

Several runs may share one store (local workers, SLURM array tasks, two users): each cell is claimed before
it runs (`stitching.bench.claims`), so a cell another live process computes is left to it; the run then
waits for those cells at the end and computes any whose claimer died. A run starts by removing what killed
runs left behind (temporary files, stale claims renamed aside) and refuses to start on a nearly full disk.
"""

from __future__ import annotations

import errno
import functools
import shutil
import time
from pathlib import Path
from typing import Any

from stitching._utils import DiskFullError, remove_stale_temporaries
from stitching.bench import claims
from stitching.bench.cell import run_cell
from stitching.bench.grid import expand_suite
from stitching.bench.runtime import Runtime
from stitching.bench.store import ResultStore
from stitching.bench.suite import Suite, load_suite
from stitching.zoo import ModelSource, get_trained, is_stored, remove_stored_locks

DEFAULT_SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "digits.yaml"
MIN_FREE_BYTES = 64 * 2**20
"""A run refuses to start with less free space than this where its records go."""


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
    (several per cell: DDP) and speed switches the cells run with. Cells another live process holds are
    waited for at the end (with ``wait``; else reported in ``pending`` as running elsewhere).
    """
    from stitching.launch import InlineExecutor

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if cells is None:
        cells = expand_suite(suite)  # raises SuiteError listing every problem before any training
    out_dir = results_dir_for(suite, results_root)
    store = ResultStore(out_dir)
    check_free_space(out_dir)
    clean_leftovers(out_dir)
    todo = sorted(pending_cells(cells, store), key=group_key)
    started = time.perf_counter()
    executor = executor or InlineExecutor()
    print(
        f"suite {suite.name} v{suite.version}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
        f"{len(todo)} to run -> {out_dir}"
    )
    failed, pending, elsewhere, ran = {}, {}, {}, len(todo)
    if todo and getattr(executor, "name", None) != "slurm":
        train_base_models(todo, progress=getattr(executor, "progress", True))
    fn = functools.partial(run_cell, store_dir=str(out_dir), runtime=runtime)
    while todo:
        report = executor.run(todo, fn, wait=wait, group_key=group_key, workdir=out_dir)
        failed.update(report.errors)
        pending.update(report.pending)
        elsewhere = running_elsewhere(store, failed)
        for cell_id in elsewhere:
            failed.pop(cell_id)
        if not elsewhere or not wait:
            break
        print(f"{len(elsewhere)} cells are running elsewhere ({next(iter(elsewhere.values()))}); waiting")
        claims.wait_released(claims.claims_dir(out_dir), elsewhere)
        todo = [c for c in todo if c.cell_id in elsewhere and not store.has(c.cell_id)]
        elsewhere = {}
    pending.update({cid: f"running elsewhere: {holder}" for cid, holder in elsewhere.items()})
    return {
        "suite": suite.name,
        "results_dir": str(out_dir),
        "cells": len(cells),
        "ran": ran,
        "finished": len(store.finished_ids() & {c.cell_id for c in cells}),
        "failed": failed,
        "pending": pending,
        "seconds": time.perf_counter() - started,
    }


def running_elsewhere(store: ResultStore, errors: dict[str, str]) -> dict[str, str]:
    """The failed cells that another live process holds (``{cell_id: holder}``); failed cells whose record
    exists by now (their holder finished them) are dropped from ``errors``."""
    found = {}
    for cell_id in list(errors):
        if store.has(cell_id):
            errors.pop(cell_id)
            continue
        holder = claims.live_holder(claims.claims_dir(store.root), cell_id)
        if holder is not None:
            found[cell_id] = holder.describe()
    return found


def check_free_space(out_dir: Path, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse to start (a `DiskFullError` saying so) when ``out_dir``'s filesystem is nearly full."""
    existing = next(p for p in (out_dir, *out_dir.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device for {out_dir}: {free / 2**20:.0f} MiB free, a run needs at least "
            f"{needed / 2**20:.0f} MiB; nothing was started, every record there is kept",
        )


def clean_leftovers(out_dir: Path) -> list[Path]:
    """Remove what killed runs left in a results directory and the activation cache: temporary files of
    interrupted writes (a dead process of this host, or older than an hour) and stale renamed-aside claims."""
    from stitching.bench.context import default_cache_dir

    folders = [out_dir, *(out_dir / sub for sub in ("cells", "predictions", "features", "claims"))]
    folders += [*(out_dir / "work").glob("*"), default_cache_dir() / "activations"]
    removed = [p for folder in folders for p in remove_stale_temporaries(folder)]
    removed += claims.remove_stale_graves(claims.claims_dir(out_dir)) + remove_stored_locks()
    if removed:
        print(f"removed {len(removed)} leftovers of killed runs (e.g. {removed[0]})")
    return removed
