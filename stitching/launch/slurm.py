"""`SlurmExecutor`: cells go out as one submitit job array; jobs requeue themselves on preemption/time-out.

Requeue is owned by submitit: each job runs a `CellBatch` (a ``submitit.helpers.Checkpointable``); on the
time-out/preemption signal (USR2) its ``checkpoint()`` requeues the same call, and on the re-run finished
cells are skipped (their records exist) while a cell mid-training resumes from its own checkpoint (``fn``'s
job). Lightning must then *not* requeue as well: build trainers with
``Trainer(plugins=lightning_plugins_for_slurm())``.

Job state comes from ``squeue`` (``sacct`` needs accounting, which many small clusters lack) and results
from a JSON outcome file each job writes after every cell (``<workdir>/slurm/outcomes/``): nothing read
back from a results directory is unpickled, so a planted pickle in a folder the ledger names is never
loaded. Submitted job ids go to ``<workdir>/slurm_jobs.json``, so a later run over
the same cells re-attaches to jobs still queued or running instead of submitting them twice.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths

from stitching._utils import atomic_write

from .base import CellBatch, Executor, RunReport, read_outcomes, report_from_outcomes
from .local import cells_bar
from .options import SlurmOptions

JOBS_FILE = "slurm_jobs.json"
# squeue states of a job that may still produce a result
ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "PREEMPTED",
}


def in_submitit_slurm_job() -> bool:
    """True inside a job started by submitit on SLURM."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def lightning_plugins_for_slurm() -> list:
    """Trainer plugins that leave requeueing to submitit: ``Trainer(plugins=lightning_plugins_for_slurm())``.

    Under a submitit SLURM job this is ``[SLURMEnvironment(auto_requeue=False)]`` (Lightning still reads the
    SLURM rank/world variables but installs no requeue handler); elsewhere it is ``[]``.
    """
    if not in_submitit_slurm_job():
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{job_id: state}`` for the jobs SLURM still knows (array tasks as ``123_4``); None if squeue fails."""
    if not job_ids:
        return {}
    bases = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(bases)}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        # squeue refuses an id it has purged; that is not a controller failure
        if "Invalid job id" in res.stderr and len(bases) > 1:
            merged: dict[str, str] = {}
            for base in bases:
                part = squeue_states([base])
                if part is None:
                    return None
                merged.update(part)
            return merged
        return {} if "Invalid job id" in res.stderr else None
    return dict(line.split("|", 1) for line in res.stdout.split() if "|" in line)


class JobLedger:
    """The submitted jobs of one workdir: ``[{job_id, folder, cells, submitted}]`` in a small JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """The recorded jobs; a damaged ledger is named in a warning and read as none (each cell's claim
        still keeps a job in flight from being computed twice)."""
        if not self.path.exists():
            return []
        try:
            jobs = json.loads(self.path.read_text())["jobs"]
            if all(isinstance(j, dict) and {"job_id", "folder", "cells"} <= set(j) for j in jobs):
                return jobs
        except (ValueError, KeyError, TypeError):
            pass
        warnings.warn(
            f"{self.path} is not a job ledger; ignoring it (it is rewritten on submission)", stacklevel=2
        )
        return []

    def write(self, jobs: list[dict[str, Any]]) -> None:
        atomic_write(self.path, json.dumps({"jobs": jobs}, indent=1))  # a reader never sees half a file

    def active(self) -> list[dict[str, Any]]:
        """Recorded jobs still queued or running (unknown if squeue fails: then all count as active)."""
        jobs = self.read()
        states = squeue_states([j["job_id"] for j in jobs])
        if states is None:
            return jobs
        return [j for j in jobs if states.get(j["job_id"]) in ACTIVE_STATES]


def job_status(workdir: str | Path) -> list[dict[str, Any]]:
    """The jobs recorded in ``workdir`` with their current squeue state (``GONE`` once SLURM forgot them)."""
    jobs = JobLedger(Path(workdir) / JOBS_FILE).read()
    states = squeue_states([j["job_id"] for j in jobs]) or {}
    return [{**j, "state": states.get(j["job_id"], "GONE")} for j in jobs]


class SlurmExecutor(Executor):
    """Submit cells (or groups of cells) as one SLURM job array through submitit."""

    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None, progress: bool = True) -> None:
        self.options = options or SlurmOptions()
        self.progress = progress

    def _run(self, batches: list[CellBatch], *, wait: bool, workdir: Path) -> RunReport:
        order = [cid for b in batches for cid in b.cell_ids]
        ledger = JobLedger(workdir / JOBS_FILE)
        # cells still in flight from an earlier (--no-wait) submission are re-attached, not resubmitted
        attached = [j for j in ledger.active() if set(j["cells"]) & set(order)]
        in_flight = {cid for j in attached for cid in j["cells"]}
        batches = [b for b in batches if not set(b.cell_ids) & in_flight]
        records = [*attached, *self._submit(batches, workdir)]
        ledger.write(records)
        if not wait:
            pending = {cid: r["job_id"] for r in records for cid in r["cells"] if cid in order}
            return RunReport(pending=pending)
        return report_from_outcomes(order, self._wait(records, total=len(order)))

    def _submit(self, batches: list[CellBatch], workdir: Path) -> list[dict[str, Any]]:
        if not batches:
            return []
        folder = self.options.folder or str(workdir / "slurm" / "%j")
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=self.options.max_num_timeout
        )
        executor.update_parameters(**self.options.submitit_parameters())
        for batch in batches:
            batch.outcome_file = str(workdir / "slurm" / "outcomes" / f"{secrets.token_hex(8)}.json")
        with executor.batch():  # one sbatch call: a job array of len(batches) tasks
            jobs = [executor.submit(batch) for batch in batches]
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return [
            {"job_id": job.job_id, "folder": folder, "cells": b.cell_ids, "submitted": now,
             "outcomes": b.outcome_file}
            for job, b in zip(jobs, batches, strict=True)
        ]  # fmt: skip

    def _wait(self, jobs: list[dict[str, Any]], total: int) -> dict[str, tuple[bool, Any]]:
        """Poll until every job has written the outcome of each of its cells or has left the queue."""
        outcomes: dict[str, tuple[bool, Any]] = {}
        remaining = list(jobs)
        with cells_bar(total, "cells (slurm)", self.progress) as bar:  # ticks as each job's cells finish
            while remaining:
                finished = [j for j in remaining if set(j["cells"]) <= set(_outcomes_of(j))]
                states = squeue_states([j["job_id"] for j in remaining])
                if states is not None:  # left the queue: finished, crashed, cancelled or out of time
                    gone = [j for j in remaining if states.get(j["job_id"]) not in ACTIVE_STATES]
                    finished += [j for j in gone if j not in finished]
                for job in finished:
                    outcomes.update(self._collect(job, states or {}))
                    bar.update(len(job["cells"]))
                remaining = [j for j in remaining if j not in finished]
                if remaining:
                    time.sleep(self.options.poll_s)
        return outcomes

    @staticmethod
    def _collect(job: dict[str, Any], states: dict[str, str]) -> dict[str, tuple]:
        """The job's outcomes from its JSON file; a cell without one failed, with the job's log named."""
        found = _outcomes_of(job)
        if not set(job["cells"]) <= set(found):
            time.sleep(1)  # the job may have written its last outcome just after our check
            found = _outcomes_of(job)
        state = states.get(job["job_id"], "no longer in squeue")
        log = JobPaths(job["folder"], job_id=job["job_id"]).stderr
        reason = f"SLURM job {job['job_id']} ended ({state}) without an outcome for this cell; log: {log}"
        return {cid: found.get(cid, (False, reason)) for cid in job["cells"]}


def _outcomes_of(job: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    """What a job wrote of its cells (JSON, never a pickle); {} for a job without an outcome file."""
    return read_outcomes(job["outcomes"]) if job.get("outcomes") else {}
