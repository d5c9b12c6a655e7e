"""`SlurmExecutor`: cells go out as one submitit job array; jobs requeue themselves on preemption/time-out.

Requeue is owned by submitit: each job runs a `CellBatch` (a ``submitit.helpers.Checkpointable``); on the
time-out/preemption signal (USR2) its ``checkpoint()`` requeues the same call, and on the re-run finished
cells are skipped (their records exist) while a cell mid-training resumes from its own checkpoint (``fn``'s
job). Lightning must then *not* requeue as well: build trainers with
``Trainer(plugins=lightning_plugins_for_slurm())``.

Job state comes from ``squeue`` (``sacct`` needs accounting, which many small clusters lack) and results
from submitit's result pickles. Submitted job ids go to ``<workdir>/slurm_jobs.json``, so a later run over
the same cells re-attaches to jobs still queued or running instead of submitting them twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit

from stitching._utils import atomic_write

from .base import CellBatch, Executor, RunReport, report_from_outcomes
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
        if not self.path.exists():
            return []
        return json.loads(self.path.read_text())["jobs"]

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
        jobs = [(submitit.SlurmJob(folder=r["folder"], job_id=r["job_id"]), r["cells"]) for r in records]
        if not wait:
            return RunReport(
                pending={cid: job.job_id for job, cells in jobs for cid in cells if cid in order}
            )
        return report_from_outcomes(order, self._wait(jobs, total=len(order)))

    def _submit(self, batches: list[CellBatch], workdir: Path) -> list[dict[str, Any]]:
        if not batches:
            return []
        folder = self.options.folder or str(workdir / "slurm" / "%j")
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=self.options.max_num_timeout
        )
        executor.update_parameters(**self.options.submitit_parameters())
        with executor.batch():  # one sbatch call: a job array of len(batches) tasks
            jobs = [executor.submit(batch) for batch in batches]
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return [
            {"job_id": job.job_id, "folder": folder, "cells": b.cell_ids, "submitted": now}
            for job, b in zip(jobs, batches, strict=True)
        ]

    def _wait(
        self, jobs: list[tuple[submitit.SlurmJob, list[str]]], total: int
    ) -> dict[str, tuple[bool, Any]]:
        """Poll until every job has a result or has left the queue without one."""
        outcomes: dict[str, tuple[bool, Any]] = {}
        remaining = list(jobs)
        with cells_bar(total, "cells (slurm)", self.progress) as bar:  # ticks as each job's cells finish
            while remaining:
                finished = [(j, c) for j, c in remaining if j.paths.result_pickle.exists()]
                states = squeue_states([j.job_id for j, _ in remaining])
                if states is not None:  # left the queue with no result: crashed, cancelled or out of time
                    gone = [(j, c) for j, c in remaining if states.get(j.job_id) not in ACTIVE_STATES]
                    finished += [x for x in gone if x not in finished]
                for job, cells in finished:
                    outcomes.update(self._collect(job, cells, states or {}))
                    bar.update(len(cells))
                remaining = [x for x in remaining if x not in finished]
                if remaining:
                    time.sleep(self.options.poll_s)
        return outcomes

    @staticmethod
    def _collect(job: submitit.SlurmJob, cells: list[str], states: dict[str, str]) -> dict[str, tuple]:
        if not job.paths.result_pickle.exists():
            time.sleep(1)  # the job may have written its result just after our check
        if not job.paths.result_pickle.exists():
            state = states.get(job.job_id, "no longer in squeue")
            reason = f"SLURM job {job.job_id} ended ({state}) without a result; log: {job.paths.stderr}"
            return {cid: (False, reason) for cid in cells}
        try:
            return job.result()
        except Exception as error:  # the batch itself failed (e.g. timed out too often)
            return {cid: (False, f"SLURM job {job.job_id} failed: {error}") for cid in cells}
