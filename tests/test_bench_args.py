"""``stitching bench`` flags: jsonargparse dataclass groups parse into typed options; bad values fail in one
line that names the option."""

import pytest

from stitching.bench.commands import bench_main, bench_parser
from stitching.bench.runtime import Runtime, runtime_from_args
from stitching.core.speed import Speed
from stitching.launch import SlurmOptions, executor_from_args, load_slurm_options


def parse(*argv):
    return bench_parser().parse_args(list(argv))


def test_trainer_and_speed_flags_parse_into_a_typed_runtime():
    args = parse("--trainer.devices", "4", "--trainer.accelerator", "cpu", "--speed.precision", "bf16",
                 "--speed.compile", "on", "--speed.channels_last", "off", "--speed.fuse", "true",
                 "--speed.pin_memory", "null")  # fmt: skip
    runtime = runtime_from_args(args)
    assert runtime == Runtime(
        accelerator="cpu",
        devices=4,
        speed=Speed(precision="bf16", compile=True, channels_last=False, fuse=True, pin_memory=None),
    )
    assert runtime_from_args(parse()) == Runtime()
    assert runtime_from_args(parse("--speed.compile", "false")).speed.compile is False


def test_slurm_flags_override_the_preset_into_typed_options():
    args = parse("--executor", "slurm", "--slurm.preset", "gpu", "--slurm.partition", "gpu",
                 "--slurm.mem_gb", "64", "--slurm.additional_parameters", "constraint=a100",
                 "--slurm.additional_parameters", "mail-type=END", "--slurm.setup", "module load cuda",
                 "--slurm.setup", "source env.sh", "--no-wait")  # fmt: skip
    options = executor_from_args(args).options
    gpu = load_slurm_options("gpu")
    assert args.no_wait and options == SlurmOptions(
        **{
            **vars(gpu),
            "partition": "gpu",
            "mem_gb": 64.0,
            "additional_parameters": {"constraint": "a100", "mail-type": "END"},
            "setup": ["module load cuda", "source env.sh"],
        }
    )
    assert type(options.mem_gb) is float


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--speed.compile", "maybe"], "error: --speed.compile: expected on or off, got 'maybe'"),
        (["--speed.precision", "16"], "error: --speed.precision: expected one of '32', 'bf16', got '16'"),
        (["--trainer.devices", "two"], "error: --trainer.devices: expected int, got 'two'"),
        (["--trainer.accelerator", "tpu"], "--trainer.accelerator: expected one of 'auto', 'cpu', 'gpu'"),
        (["--slurm.timeout_min", "1.5"], "error: --slurm.timeout_min: expected int, got '1.5'"),
        (["--slurm.partiton", "gpu"], "did you mean --slurm.partition"),
    ],
)
def test_bad_flag_values_fail_in_one_line_naming_the_option(capsys, argv, expected):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_bad_slurm_values_and_presets_fail_before_any_cell_runs(capsys):
    assert bench_main(["--executor", "slurm", "--slurm.cpus_per_task", "0", "--dry-run"]) == 2
    assert "cpus_per_task must be >= 1" in capsys.readouterr().err
    assert bench_main(["--executor", "slurm", "--slurm.preset", "gpus", "--dry-run"]) == 2
    assert "unknown SLURM preset 'gpus'" in capsys.readouterr().err


def test_help_lists_the_typed_groups(capsys):
    with pytest.raises(SystemExit) as exit:
        bench_main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--slurm.partition", "--slurm.preset", "--speed.compile", "--trainer.devices", "--dry-run"):
        assert flag in out
