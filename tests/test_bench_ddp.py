"""DDP within a benchmark cell: two CPU ranks (gloo) train each adapter together, rank 0 scores and writes.

Without BatchNorm in the adapter, DDP must reproduce the single-device training step for step (each rank
takes half of every batch and the averaged gradient is the whole batch's); with BatchNorm each CPU rank
normalises its own half (torch has no SyncBatchNorm on CPU), so only the run itself is checked.
"""

import os
import subprocess
import sys
from pathlib import Path

import jsonargparse
import pytest

# The module-scoped runs below cannot take conftest's function-scoped write_suite fixture: the same function.
from conftest import _write_suite

from stitching.bench.runtime import Runtime, add_runtime_arguments, runtime_from_args
from stitching.bench.store import ResultStore
from stitching.cli import main
from stitching.core.speed import Speed
from stitching.launch import add_executor_arguments, executor_from_args

SMALL_TRAIN = str(Path(__file__).parent / "data" / "train_small.yaml")


def ddp_suite(path):
    return _write_suite(
        path,
        name="ddp",
        models={"resnet": {"name": "mini_resnet", "train": SMALL_TRAIN, "seeds": [0, 1]}},
        pairs={"mode": "same_arch", "include_self": False},
        adapters=[{"norm": "none"}, {"norm": "bn"}],
        inits=["lstsq"],
        recipe={"epochs": 2, "batch_size": 64},
        metrics=["linear_cka"],
    )


def bench(suite, results, cache, *extra):
    cmd = [sys.executable, "-m", "stitching.cli", "bench", str(suite), "--results", str(results),
           "--trainer.accelerator", "cpu", *extra]  # fmt: skip
    env = dict(os.environ, STITCHING_CACHE=str(cache), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    suite = ddp_suite(root / "ddp.yaml")
    # DDP first, on an empty model store: rank 0 trains the base models while rank 1 waits
    ddp_out = bench(suite, root / "two", root / "cache", "--trainer.devices", "2")
    bench(suite, root / "one", root / "cache")
    two = {r["cell_id"]: r for r in ResultStore(root / "two" / "ddp").records()}
    one = {r["cell_id"]: r for r in ResultStore(root / "one" / "ddp").records()}
    return one, two, ddp_out, root


def test_ddp_run_writes_each_record_once_from_rank_zero(runs):
    one, two, out, root = runs
    assert len(two) == len(one) == 4 and two.keys() == one.keys()
    assert all(r["training"]["devices"] == 2 for r in two.values())
    assert all(r["training"]["devices"] == 1 for r in one.values())
    assert out.count("cells finished") == 1  # only rank 0 reports
    assert (root / "two" / "ddp" / "leaderboard.csv").is_file()
    assert not (root / "two" / "ddp" / "work").exists()  # checkpoints removed once records exist
    # the base models were trained once, by rank 0, and then shared
    assert len([p for p in (root / "cache" / "zoo").iterdir() if p.is_dir()]) == 2


def test_ddp_without_batchnorm_matches_one_device(runs):
    one, two, _, _ = runs
    plain = [cid for cid, r in one.items() if r["config"]["adapter"]["norm"] == "none"]
    assert len(plain) == 2
    for cid in plain:
        a, b = one[cid], two[cid]
        assert a["metrics"]["stitched_acc"] > 0.5  # trained base models and adapters, not chance
        for ea, eb in zip(a["training"]["epochs"], b["training"]["epochs"], strict=True):
            assert eb["loss"] == pytest.approx(ea["loss"], rel=1e-5)
            assert eb["val_acc"] == pytest.approx(ea["val_acc"], abs=1e-9)
        for name, value in a["metrics"].items():  # scored on one device over the whole test set
            assert b["metrics"][name] == pytest.approx(value, abs=1e-5), name


def test_ddp_with_batchnorm_trains(runs):
    one, two, _, _ = runs
    bn = [cid for cid, r in one.items() if r["config"]["adapter"]["norm"] == "bn"]
    for cid in bn:
        losses = [e["loss"] for e in two[cid]["training"]["epochs"]]
        assert losses[1] < losses[0]
        assert two[cid]["metrics"]["stitched_acc"] > 0.5


def test_local_executor_refuses_ddp_with_the_fix(tmp_path, capsys):
    assert main(["bench", str(ddp_suite(tmp_path / "s.yaml")), "--executor", "local",
                 "--trainer.devices", "2"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--executor local" in err and "--executor inline" in err


def executor_args(*argv):
    parser = jsonargparse.ArgumentParser()
    add_executor_arguments(parser)
    return parser.parse_args(["--executor", "slurm", *argv])


def test_slurm_jobs_get_one_task_and_one_gpu_per_device():
    options = executor_from_args(executor_args(), devices=4, accelerator="gpu").options
    assert (options.tasks_per_node, options.gpus_per_node) == (4, 4)
    assert options.submitit_parameters()["tasks_per_node"] == 4
    cpu = executor_from_args(executor_args(), devices=2, accelerator="cpu").options
    assert (cpu.tasks_per_node, cpu.gpus_per_node) == (2, 0)
    with pytest.raises(ValueError, match="gpus_per_node is 2"):
        executor_from_args(executor_args("--slurm.gpus_per_node", "2"), devices=4, accelerator="gpu")


def test_devices_and_speed_switches_from_the_command_line():
    parser = jsonargparse.ArgumentParser()
    add_runtime_arguments(parser)
    args = ["--trainer.devices", "2", "--speed.precision", "bf16", "--speed.compile", "on",
            "--speed.channels_last", "off", "--speed.fuse", "null"]  # fmt: skip
    runtime = runtime_from_args(parser.parse_args(args))
    assert runtime.devices == 2 and runtime.accelerator == "auto"
    assert runtime.speed == Speed(precision="bf16", compile=True, channels_last=False, fuse=None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--speed.compile", "maybe"])
    with pytest.raises(ValueError, match="choose one of"):
        Runtime(accelerator="tpu")
