"""Executors without a cluster: inline vs local processes, grouping, failures, options and CLI wiring.

The toy cell functions (``tests/toy_cells.py``, shared with test_slurm.py) stand in for the runner's
``run_cell(cell, store_dir)``: deterministic, write their record atomically, skip finished cells.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import pytest
import yaml
from jsonargparse import ArgumentParser
from toy_cells import by_source, toy_cell, toy_cells

from stitching.launch import (
    InlineExecutor,
    LocalExecutor,
    SlurmExecutor,
    SlurmOptions,
    add_executor_arguments,
    executor_from_args,
    group_cells,
    lightning_plugins_for_slurm,
    list_presets,
    load_slurm_options,
)
from stitching.launch.base import CellsFailed
from stitching.launch.options import PRESET_DIR


def test_inline_runs_every_cell_and_reports_failures_without_losing_others(tmp_path):
    cells = toy_cells(4, fail="c01")
    report = InlineExecutor(progress=False).run(cells, partial(toy_cell, store_dir=str(tmp_path)))
    assert list(report.results) == ["c00", "c02", "c03"]
    assert list(report.errors) == ["c01"] and "asked to fail" in report.errors["c01"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["c00.json", "c02.json", "c03.json"]
    with pytest.raises(CellsFailed, match="1 of 4 cells failed: c01"):
        report.raise_on_error()


def test_local_two_workers_equals_inline(tmp_path):
    cells = toy_cells(5, fail="c03")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inline = InlineExecutor(progress=False).run(cells, partial(toy_cell, store_dir=str(tmp_path / "a")))
    start = time.perf_counter()
    local = LocalExecutor(workers=2, progress=False).run(
        cells, partial(toy_cell, store_dir=str(tmp_path / "b")), group_key=by_source
    )
    print(f"local executor, 2 workers, {len(cells)} cells: {time.perf_counter() - start:.1f} s")
    assert local.results == inline.results
    assert list(local.errors) == ["c03"] and "asked to fail" in local.errors["c03"]
    for cid in local.results:  # the records on disk agree too
        assert (tmp_path / "a" / f"{cid}.json").read_text() == (tmp_path / "b" / f"{cid}.json").read_text()


def test_grouping_keeps_order_and_rejects_duplicates_and_missing_ids():
    cells = toy_cells(4)
    assert [[c["cell_id"] for c in g] for g in group_cells(cells, by_source)] == [
        ["c00", "c02"],
        ["c01", "c03"],
    ]
    assert len(group_cells(cells)) == 4
    with pytest.raises(ValueError, match="duplicate cell ids"):
        group_cells([*cells, cells[0]])
    with pytest.raises(ValueError, match="no 'cell_id'"):
        group_cells([{"seed": 1}])


def test_only_cluster_executors_can_return_before_cells_finish(tmp_path):
    with pytest.raises(ValueError, match="--no-wait"):
        LocalExecutor(workers=1).run(toy_cells(1), partial(toy_cell, store_dir=str(tmp_path)), wait=False)


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_loads(preset):
    options = load_slurm_options(preset)
    values = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text()) or {}
    assert values and {name: getattr(options, name) for name in values} == values
    params = options.submitit_parameters()
    assert params["slurm_array_parallelism"] == options.array_parallelism
    assert params["timeout_min"] == options.timeout_min


def test_options_errors_name_the_problem():
    option = (
        r"unknown SLURM option 'partiton' in .*; did you mean partition\? valid: partition, gpus_per_node,"
    )
    with pytest.raises(ValueError, match=option):
        load_slurm_options("default", partiton="gpu")
    with pytest.raises(ValueError, match=r"unknown SLURM preset 'gpus'; did you mean gpu\? available: .*gpu"):
        load_slurm_options("gpus")
    with pytest.raises(ValueError, match="must contain '%j'"):
        SlurmOptions(folder="logs/%A_%a")
    with pytest.raises(ValueError, match="cpus_per_task must be >= 1"):
        SlurmOptions(cpus_per_task=0)


def test_zero_gpus_and_unset_fields_stay_out_of_sbatch():
    params = SlurmOptions(gpus_per_node=0).submitit_parameters()
    assert not {"gpus_per_node", "mem_gb", "slurm_partition", "slurm_account", "slurm_qos"} & set(params)
    params = SlurmOptions(gpus_per_node=2, mem_gb=16, partition="gpu", qos="high").submitit_parameters()
    assert (
        params["gpus_per_node"] == 2 and params["slurm_partition"] == "gpu" and params["slurm_qos"] == "high"
    )


def test_cli_flags_override_the_preset():
    parser = ArgumentParser(exit_on_error=False)
    add_executor_arguments(parser)
    args = parser.parse_args(
        [
            "--executor",
            "slurm",
            "--slurm.preset",
            "gpu",
            "--slurm.partition",
            "a100",
            "--slurm.timeout_min",
            "30",
            "--slurm.additional_parameters",
            "constraint=volta",
            "--slurm.setup",
            "module load cuda",
            "--no-wait",
        ]
    )
    executor = executor_from_args(args)
    assert isinstance(executor, SlurmExecutor) and args.no_wait
    gpu = load_slurm_options("gpu")
    assert executor.options == SlurmOptions(
        **{
            **vars(gpu),
            "partition": "a100",
            "timeout_min": 30,
            "additional_parameters": {"constraint": "volta"},
            "setup": ["module load cuda"],
        }
    )
    assert isinstance(executor_from_args(parser.parse_args([])), InlineExecutor)
    local = executor_from_args(parser.parse_args(["--executor", "local", "--workers", "3"]))
    assert isinstance(local, LocalExecutor) and local.workers == 3
    with pytest.raises(argparse.ArgumentError, match="expected KEY=VALUE"):
        parser.parse_args(["--slurm.additional_parameters", "novalue"])
    # the preset's value stays unless the flag is given, even when the flag gives the dataclass default
    zero = executor_from_args(parser.parse_args(["--executor", "slurm", "--slurm.preset", "gpu",
                                                 "--slurm.gpus_per_node", "0"])).options  # fmt: skip
    assert gpu.gpus_per_node == 1 and zero.gpus_per_node == 0 and zero.cpus_per_task == gpu.cpus_per_task


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_lightning_leaves_requeue_to_submitit_only_inside_a_submitit_job(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert lightning_plugins_for_slurm() == []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    (env,) = lightning_plugins_for_slurm()
    # No requeue handler of Lightning's, but the job's SLURM variables are still read.
    assert env.auto_requeue is False and env.job_id() == 42


def test_executor_arguments_coexist_with_a_callers_own_no_wait_flag():
    parser = ArgumentParser()
    parser.add_argument("--no-wait", action="store_true")
    add_executor_arguments(parser)
    args = parser.parse_args(["--executor", "slurm", "--no-wait"])
    assert args.no_wait and isinstance(executor_from_args(args), SlurmExecutor)
