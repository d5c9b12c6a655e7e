"""The real benchmark cell function through a real single-host SLURM: same records as a local run."""

from pathlib import Path

import pytest

from stitching.bench.grid import expand_suite
from stitching.bench.runner import run_suite
from stitching.bench.runtime import Runtime
from stitching.bench.store import ResultStore
from stitching.bench.suite import load_suite
from stitching.launch import SlurmExecutor, load_slurm_options

STABLE = ("config", "cell_id", "suite", "adapter_params", "specs", "schema")


def untrained_suite(write_suite, path: Path) -> Path:
    # seeded random base models: no training inside the jobs, the cells themselves run for real
    return write_suite(
        path,
        name="viaslurm",
        models={"resnet": {"name": "mini_resnet", "seeds": [0, 1]}},
        pairs={"mode": "same_arch", "include_self": True},
    )


def test_suite_through_slurm_gives_the_same_records_as_inline(
    slurm_cluster, tmp_path, monkeypatch, write_suite
):
    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite_path = untrained_suite(write_suite, tmp_path / "suite.yaml")
    cells = expand_suite(load_suite(suite_path))
    assert len(cells) == 3
    inline = run_suite(suite_path, tmp_path / "inline")
    executor = SlurmExecutor(load_slurm_options("local-test"), progress=False)
    via_slurm = run_suite(suite_path, tmp_path / "slurm", executor=executor)
    assert inline["finished"] == via_slurm["finished"] == 3 and not via_slurm["failed"]
    local = {r["cell_id"]: r for r in ResultStore(tmp_path / "inline" / "viaslurm").records()}
    remote = {r["cell_id"]: r for r in ResultStore(tmp_path / "slurm" / "viaslurm").records()}
    assert local.keys() == remote.keys()
    for cell_id, record in local.items():
        for key in STABLE:
            assert remote[cell_id][key] == record[key], key
        for metric, value in record["metrics"].items():
            assert remote[cell_id]["metrics"][metric] == pytest.approx(value, abs=1e-6), metric
    # grouped by source model and cut: cells sharing activations ran in one job
    assert (tmp_path / "slurm" / "viaslurm" / "slurm_jobs.json").is_file()


def test_a_cell_trains_with_ddp_on_two_slurm_tasks(slurm_cluster, tmp_path, monkeypatch, write_suite):
    """--trainer.devices 2 through SLURM: one task per device, Fabric reads the ranks from SLURM."""
    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite_path = write_suite(
        tmp_path / "suite.yaml",
        name="ddpslurm",
        models={"resnet": {"name": "mini_resnet", "seeds": [0, 1]}},
        pairs={"mode": "same_arch", "include_self": False},
        adapters=[{"norm": "none"}],  # no BatchNorm: DDP on CPU must match one device exactly
        cuts={"depths": [0.25]},
    )
    inline = run_suite(suite_path, tmp_path / "inline")
    options = load_slurm_options("local-test", tasks_per_node=2)
    executor = SlurmExecutor(options, progress=False)
    ddp = run_suite(suite_path, tmp_path / "slurm", executor=executor, runtime=Runtime("cpu", devices=2))
    assert ddp["finished"] == inline["finished"] == 2 and not ddp["failed"], ddp["failed"]
    local = {r["cell_id"]: r for r in ResultStore(tmp_path / "inline" / "ddpslurm").records()}
    remote = {r["cell_id"]: r for r in ResultStore(tmp_path / "slurm" / "ddpslurm").records()}
    for cell_id, record in local.items():
        assert remote[cell_id]["training"]["devices"] == 2
        for metric, value in record["metrics"].items():
            assert remote[cell_id]["metrics"][metric] == pytest.approx(value, abs=1e-5), metric
