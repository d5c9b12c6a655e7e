"""The executor contract: run a list of cell configs through one function and report per cell.

Executors know nothing of the science. They get fully resolved cell configs (JSON-able dicts with a stable
``cell_id``) and a picklable ``fn(cell) -> record`` (the runner's ``run_cell`` bound to a store); ``fn``
owns skipping finished cells, writing records atomically and resuming a cell from its own checkpoint.
"""

from __future__ import annotations

import json
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from stitching._utils import atomic_write

CellFn = Callable[[dict], Any]
GroupKey = Callable[[dict], str]
OnCell = Callable[[str, bool], None]
"""Told ``(cell_id, ok)`` after each cell of a batch, for progress bars that tick per cell."""


def cell_id(cell: Any) -> str:
    """The stable id of a cell: its ``cell_id`` attribute (``stitching.bench.cell_config.Cell``) or key."""
    found = getattr(cell, "cell_id", None)
    if found is None and isinstance(cell, dict):
        found = cell.get("cell_id")
    if not found:
        raise ValueError(
            f"cell {type(cell).__name__} has no 'cell_id'; expand suites with stitching.bench.grid"
        )
    return str(found)


class CellsFailed(RuntimeError):
    """Raised by `RunReport.raise_on_error` when at least one cell failed."""


@dataclass
class RunReport:
    """What happened to each cell: a result, an error (traceback text) or still pending in a cluster job."""

    results: dict[str, Any] = field(default_factory=dict)
    """cell_id -> what ``fn`` returned, in the order the cells were given."""
    errors: dict[str, str] = field(default_factory=dict)
    """cell_id -> traceback or reason the cell produced no result."""
    pending: dict[str, str] = field(default_factory=dict)
    """cell_id -> cluster job id, for cells still queued or running (``wait=False``)."""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.pending

    def raise_on_error(self) -> None:
        """Raise `CellsFailed` naming the failed cells, with the first traceback."""
        if self.errors:
            first, text = next(iter(self.errors.items()))
            raise CellsFailed(
                f"{len(self.errors)} of {len(self.errors) + len(self.results)} cells failed: "
                f"{', '.join(self.errors)}\nfirst failure ({first}):\n{text}"
            )


class CellBatch(Checkpointable):
    """Run cells in sequence; a failing cell is recorded and the next one runs.

    It is the callable submitted to SLURM: on preemption or time-out submitit calls ``checkpoint()``, which
    requeues this same object, finished outcomes included, so they are not run again. Cells that finished
    before an external requeue are skipped by ``fn`` itself because their records exist.
    """

    def __init__(self, fn: CellFn, cells: Sequence[dict], on_cell: OnCell | None = None) -> None:
        self.fn = fn
        self.cells = list(cells)
        self.outcomes: dict[str, tuple[bool, Any]] = {}
        self.on_cell = on_cell
        self.outcome_file: str | None = None
        """Where a cluster job writes its outcomes as JSON after each cell (read back instead of a pickle)."""

    @property
    def cell_ids(self) -> list[str]:
        return [cell_id(c) for c in self.cells]

    def __call__(self) -> dict[str, tuple[bool, Any]]:
        """Return ``{cell_id: (True, result) | (False, traceback)}``."""
        for cell in self.cells:
            cid = cell_id(cell)
            if cid in self.outcomes:
                continue
            try:
                self.outcomes[cid] = (True, self.fn(cell))
            except Exception:  # one cell's failure must not lose the others
                self.outcomes[cid] = (False, traceback.format_exc())
            if self.on_cell is not None:
                self.on_cell(cid, self.outcomes[cid][0])
            if self.outcome_file is not None:
                write_outcomes(self.outcome_file, self.outcomes)
        return dict(self.outcomes)


def write_outcomes(path: str | Path, outcomes: dict[str, tuple[bool, Any]]) -> None:
    """``{cell_id: [ok, result or error text]}`` as JSON, atomically (what is not JSON is written as text)."""
    atomic_write(path, json.dumps({cid: list(o) for cid, o in outcomes.items()}, default=repr))


def read_outcomes(path: str | Path) -> dict[str, tuple[bool, Any]]:
    """The outcomes `write_outcomes` wrote ({} if none, or if the file is not such JSON): never unpickled."""
    try:
        data = json.loads(Path(path).read_text())
        return {str(cid): (bool(ok), value) for cid, (ok, value) in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def group_cells(cells: Sequence[dict], group_key: GroupKey | None = None) -> list[list[dict]]:
    """Split cells into groups that run in one worker/job, in first-seen order; each cell alone if no key."""
    ids = [cell_id(c) for c in cells]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate cell ids {duplicates}: each cell must appear once")
    if group_key is None:
        return [[c] for c in cells]
    groups: dict[str, list[dict]] = {}
    for cell in cells:
        groups.setdefault(str(group_key(cell)), []).append(cell)
    return list(groups.values())


def report_from_outcomes(order: Sequence[str], outcomes: dict[str, tuple[bool, Any]]) -> RunReport:
    """Build a `RunReport` in the given cell order from ``CellBatch`` outcomes."""
    report = RunReport()
    for cid in order:
        if cid in outcomes:
            ok, value = outcomes[cid]
            (report.results if ok else report.errors)[cid] = value
    return report


class Executor(ABC):
    """Runs cells through ``fn``: `InlineExecutor`, `LocalExecutor` or `SlurmExecutor`."""

    name: str = "executor"

    def run(
        self,
        cells: Sequence[dict],
        fn: CellFn,
        *,
        wait: bool = True,
        group_key: GroupKey | None = None,
        workdir: str | Path | None = None,
    ) -> RunReport:
        """Run every cell through ``fn`` and report per cell.

        Args:
            cells: resolved cell configs, each with a unique ``cell_id``.
            fn: picklable ``fn(cell) -> record`` (for the process and cluster executors).
            wait: block until every cell is done; ``False`` (cluster executors only) returns after submission
                with the cells in ``RunReport.pending``.
            group_key: cells with the same key (e.g. same source model and cut, sharing cached activations)
                run in sequence in one worker/job.
            workdir: where executors keep their bookkeeping (SLURM logs, submitted job ids); the runner
                passes the suite's results directory. Default: the current directory.
        """
        batches = [CellBatch(fn, group) for group in group_cells(cells, group_key)]
        if not batches:
            return RunReport()
        return self._run(batches, wait=wait, workdir=Path(workdir) if workdir is not None else Path.cwd())

    @abstractmethod
    def _run(self, batches: list[CellBatch], *, wait: bool, workdir: Path) -> RunReport: ...

    def _refuse_no_wait(self, wait: bool) -> None:
        if not wait:
            raise ValueError(
                f"the {self.name} executor cannot return before cells finish; drop --no-wait "
                "or use --executor slurm"
            )
