"""SlurmExecutor against a real single-host SLURM (started by the `slurm_cluster` fixture; skips elsewhere).

To run the real ``run_cell`` instead of the toy cells, pass ``partial(run_cell, store_dir=...)`` as ``fn``:
the jobs import it by name, so it must live in an importable module (``stitching.bench``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
import submitit
from toy_cells import by_source, stepped_cell, toy_cell, toy_cells

from stitching.launch import InlineExecutor, SlurmExecutor, job_status, load_slurm_options

pytestmark = pytest.mark.slurm
TESTS_DIR = Path(__file__).parent


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The cluster, with tests/ importable in jobs (sbatch exports this environment to them)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    return SlurmExecutor(load_slurm_options("local-test"), progress=False)


def _ledger(workdir: Path) -> list[dict]:
    return json.loads((workdir / "slurm_jobs.json").read_text())["jobs"]


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_slurm_array_gives_the_same_records_as_inline(slurm, tmp_path):
    cells = toy_cells(5, fail="c03")
    (tmp_path / "inline").mkdir()
    (tmp_path / "slurm").mkdir()
    inline = InlineExecutor(progress=False).run(cells, partial(toy_cell, store_dir=str(tmp_path / "inline")))
    start = time.perf_counter()
    # c00 alone, (c01, c03) as one group, the rest alone: three jobs in one array
    report = slurm.run(
        cells,
        partial(toy_cell, store_dir=str(tmp_path / "slurm")),
        group_key=lambda c: by_source(c) if c["cell_id"] in ("c01", "c03") else c["cell_id"],
        workdir=tmp_path,
    )
    print(f"slurm: {len(cells)} toy cells in 4 jobs: {time.perf_counter() - start:.1f} s")
    assert report.results == inline.results
    assert list(report.errors) == ["c03"] and "asked to fail" in report.errors["c03"]
    jobs = _ledger(tmp_path)
    assert [j["cells"] for j in jobs] == [["c00"], ["c01", "c03"], ["c02"], ["c04"]]
    assert len({j["job_id"].split("_")[0] for j in jobs}) == 1, "one job array"
    for cid in report.results:
        assert (tmp_path / "slurm" / f"{cid}.json").read_text() == (
            tmp_path / "inline" / f"{cid}.json"
        ).read_text()
    states = {j["job_id"]: j["state"] for j in job_status(tmp_path)}
    # a job may still be tearing down (RUNNING/COMPLETING) after writing its result
    assert set(states) == {j["job_id"] for j in jobs} and "GONE" not in states.values(), states


def test_no_wait_then_a_later_run_collects_without_resubmitting(slurm, tmp_path):
    cells = toy_cells(2)
    fn = partial(toy_cell, store_dir=str(tmp_path))
    pending = slurm.run(cells, fn, wait=False, workdir=tmp_path)
    assert not pending.results and set(pending.pending) == {"c00", "c01"}
    submitted = _ledger(tmp_path)
    assert {j["job_id"] for j in submitted} == set(pending.pending.values())
    report = slurm.run(cells, fn, workdir=tmp_path)  # what a second `stitching bench` does
    assert _ledger(tmp_path) == submitted, "jobs in flight were re-attached, not submitted again"
    assert report.ok and set(report.results) == {"c00", "c01"}
    assert report.results["c01"] == json.loads((tmp_path / "c01.json").read_text())


@pytest.mark.slow
def test_requeued_job_resumes_from_its_checkpoint_with_nothing_lost_or_duplicated(slurm, tmp_path):
    # SLURM's requeue sends SIGTERM (which submitit bypasses) and SIGKILL KillWait (5 s) later: the job must
    # still be running then, or it completes first and nothing is requeued mid-run.
    cell = {"cell_id": "train", "seed": 3, "steps": 16, "sleep": 1.0}
    fn = partial(stepped_cell, store_dir=str(tmp_path))
    start = time.perf_counter()
    (job_id,) = slurm.run([cell], fn, wait=False, workdir=tmp_path).pending.values()
    steps = tmp_path / "train.steps"
    _wait_for(lambda: steps.exists() and len(steps.read_text().split()) >= 3, 120, "3 steps before requeue")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    report = slurm.run([cell], fn, workdir=tmp_path)
    print(f"slurm requeue test: {time.perf_counter() - start:.1f} s")
    assert report.ok, report.errors
    assert report.results["train"]["metrics"]["total"] == sum(range(16)) * 3
    assert steps.read_text().split() == [str(i) for i in range(16)], "every step exactly once"
    starts = [int(s) for s in (tmp_path / "train.starts").read_text().split()]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 3, f"resumed from the checkpoint: {starts}"


@pytest.mark.slow
def test_preempted_group_requeues_through_checkpoint_and_skips_finished_cells(slurm, tmp_path):
    """submitit's own path: USR2 -> CellBatch.checkpoint() -> requeue with the finished outcomes kept."""
    quick = {"cell_id": "a-quick", "seed": 1, "steps": 1}
    slow = {"cell_id": "b-slow", "seed": 2, "steps": 8, "sleep": 1.0}
    fn = partial(stepped_cell, store_dir=str(tmp_path))
    start = time.perf_counter()
    (job_id,) = set(
        slurm.run([quick, slow], fn, wait=False, group_key=lambda c: "one", workdir=tmp_path).pending.values()
    )
    steps = tmp_path / "b-slow.steps"
    _wait_for(
        lambda: steps.exists() and len(steps.read_text().split()) >= 2, 120, "2 steps before preemption"
    )
    job = submitit.SlurmJob(folder=_ledger(tmp_path)[0]["folder"], job_id=job_id)
    job._interrupt()  # what a preemption sends: SIGTERM (ignored), then the USR2 checkpoint signal
    report = slurm.run([quick, slow], fn, group_key=lambda c: "one", workdir=tmp_path)
    print(f"slurm preemption test: {time.perf_counter() - start:.1f} s")
    assert report.ok, report.errors
    assert report.results["b-slow"]["metrics"]["total"] == sum(range(8)) * 2
    assert steps.read_text().split() == [str(i) for i in range(8)]
    assert len((tmp_path / "b-slow.starts").read_text().split()) == 2, "the slow cell was resumed once"
    # the quick cell's outcome travelled in the checkpointed CellBatch: not even called again
    assert (tmp_path / "a-quick.calls").read_text().split() == ["call"]
    assert f"Requeued job {job_id}" in job.stdout(), "submitit's checkpoint() requeued it"


def gpu_env_cell(cell: dict) -> dict:
    return {
        "cell_id": cell["cell_id"],
        "env": {k: v for k, v in os.environ.items() if "GPU" in k or "CUDA" in k},
    }


def test_gpu_requests_reach_the_job(slurm, tmp_path):
    """``gpus_per_node`` becomes ``--gpus-per-node`` (the test cluster has two fake GPUs as GRES)."""
    executor = SlurmExecutor(load_slurm_options("local-test", gpus_per_node=2), progress=False)
    report = executor.run([{"cell_id": "g"}], gpu_env_cell, workdir=tmp_path)
    assert report.ok, report.errors
    # no CUDA_VISIBLE_DEVICES with fake GRES devices and task/none; the allocation itself shows here
    assert report.results["g"]["env"]["SLURM_GPUS_ON_NODE"] == "2"
