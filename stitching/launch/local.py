"""Executors on this machine: in-process (`InlineExecutor`) and N worker processes (`LocalExecutor`)."""

from __future__ import annotations

import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from .base import CellBatch, Executor, RunReport, report_from_outcomes


def _order(batches: list[CellBatch]) -> list[str]:
    return [cid for b in batches for cid in b.cell_ids]


class InlineExecutor(Executor):
    """Run cells one after another in this process (the default; easiest to debug)."""

    name = "inline"

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def _run(self, batches: list[CellBatch], *, wait: bool, workdir: Path) -> RunReport:
        self._refuse_no_wait(wait)
        order = _order(batches)
        outcomes: dict = {}
        with tqdm(total=len(order), desc="cells", unit="cell", disable=not self.progress) as bar:
            for batch in batches:
                outcomes.update(batch())
                bar.update(len(batch.cells))
        return report_from_outcomes(order, outcomes)


def _init_worker() -> None:
    # workers run side by side on few cores: one thread each is faster than oversubscribing
    import torch

    torch.set_num_threads(1)


class LocalExecutor(Executor):
    """Run cells in ``workers`` spawned processes with one torch thread each, with a progress bar.

    ``fn`` and the cells must be picklable (a module-level function or a ``functools.partial`` of one).
    A cell that raises, or whose worker dies, is reported in ``RunReport.errors``; the others still finish.
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
            ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker) as pool,
            tqdm(total=len(order), desc="cells", unit="cell", disable=not self.progress) as bar,
        ):
            futures = {pool.submit(batch): batch for batch in batches}
            for future in as_completed(futures):
                batch = futures[future]
                try:
                    outcomes.update(future.result())
                except Exception:  # the worker died (e.g. killed, out of memory) or fn was not picklable
                    reason = traceback.format_exc()
                    outcomes.update({cid: (False, reason) for cid in batch.cell_ids})
                bar.update(len(batch.cells))
        return report_from_outcomes(order, outcomes)
