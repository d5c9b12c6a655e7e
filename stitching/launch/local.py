"""Executors on this machine: in-process (`InlineExecutor`) and N worker processes (`LocalExecutor`)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from .base import CellBatch, Executor, RunReport, report_from_outcomes


def _order(batches: list[CellBatch]) -> list[str]:
    return [cid for b in batches for cid in b.cell_ids]


def cells_bar(total: int, desc: str = "cells", enabled: bool = True) -> tqdm:
    """The cells progress bar: one tick per finished cell, ETA from the mean time per cell of the whole run
    (``smoothing=0``), so a slow first cell of a group does not swing it."""
    return tqdm(total=total, desc=desc, unit="cell", smoothing=0, disable=not enabled)


class InlineExecutor(Executor):
    """Run cells one after another in this process (the default; easiest to debug)."""

    name = "inline"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def _run(self, batches: list[CellBatch], *, wait: bool, workdir: Path) -> RunReport:
        self._refuse_no_wait(wait)
        order = _order(batches)
        outcomes: dict = {}
        with cells_bar(len(order), enabled=self.progress) as bar:
            for batch in batches:
                batch.on_cell = lambda cid, ok: bar.update(1)
                outcomes.update(batch())
        return report_from_outcomes(order, outcomes)


def _init_worker() -> None:
    # workers run side by side on few cores: one thread each is faster than oversubscribing
    import torch

    torch.set_num_threads(1)


class _Notify:
    """A picklable ``on_cell`` that tells the parent process through a manager queue."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def __call__(self, cid: str, ok: bool) -> None:
        self.queue.put(cid)


class LocalExecutor(Executor):
    """Run cells in ``workers`` spawned processes with one torch thread each, with a progress bar.

    ``fn`` and the cells must be picklable (a module-level function or a ``functools.partial`` of one).
    A cell that raises, or whose worker dies, is reported in ``RunReport.errors``; the others still finish.
    The bar ticks as each cell finishes, not only when a worker's whole group does.
    """

    name = "local"

    def __init__(self, workers: int = 2, progress: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.progress = progress

    def _run(self, batches: list[CellBatch], *, wait: bool, workdir: Path) -> RunReport:
        self._refuse_no_wait(wait)
        order = _order(batches)
        outcomes: dict = {}
        context = multiprocessing.get_context("spawn")  # fork after torch/threads is unsafe
        with (
            context.Manager() as manager,
            ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker) as pool,
            cells_bar(len(order), enabled=self.progress) as bar,
        ):
            ticked: set[str] = set()
            queue = manager.Queue()

            def drain() -> None:
                while not queue.empty():
                    ticked.add(queue.get())
                bar.update(len(ticked) - bar.n)

            for batch in batches:
                batch.on_cell = _Notify(queue)
            pending = {pool.submit(batch): batch for batch in batches}
            while pending:
                done, _ = cf.wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    outcomes.update(_outcomes(future, pending.pop(future)))
                drain()
            ticked.update(order)  # cells of a worker that died never reported
            bar.update(len(ticked) - bar.n)
        return report_from_outcomes(order, outcomes)


def _outcomes(future: Future, batch: CellBatch) -> dict:
    try:
        return future.result()
    except Exception:  # the worker died (e.g. killed, out of memory) or fn was not picklable
        reason = traceback.format_exc()
        return {cid: (False, reason) for cid in batch.cell_ids}
