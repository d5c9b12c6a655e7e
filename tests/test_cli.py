"""The `stitching` command in-process: fit/test runs, shipped configs, links, and one-line errors."""

from pathlib import Path

import pytest

from stitching import cli
from stitching.cli import StitchingCLI, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_fast_dev_run(tiny_recipe, capsys):
    assert main(["fit", "--config", tiny_recipe, "--trainer.fast_dev_run=true"]) == 0
    out = capsys.readouterr().out
    assert "ClassifierModule (test_resnet)" in out and "val/acc" in out and "DigitsDataModule" in out


def test_runs_get_their_own_dirs_and_a_summary(tiny_recipe, tmp_path, capsys):
    for _ in range(2):
        assert main(["fit", "--config", tiny_recipe]) == 0
    runs = sorted((tmp_path / "runs" / "tiny").iterdir())
    assert len(runs) == 2 and all(len(list(r.rglob("config.yaml"))) == 1 for r in runs)
    out = capsys.readouterr().out
    ckpt = out.strip().splitlines()[-1].split()[-1]
    assert ckpt.endswith(".ckpt") and Path(ckpt).is_file()
    assert main(["test", "--config", tiny_recipe, f"--ckpt_path={ckpt}"]) == 0
    assert "test/acc" in capsys.readouterr().out


def test_num_classes_is_linked_from_the_data(tmp_path):
    from PIL import Image

    for c in "abc":
        (tmp_path / "img" / "train" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / "train" / c / "0.png")
    args = [
        "--model=stitching.modules.ClassifierModule",
        "--model.model_name=test_resnet",
        "--data=stitching.data.ImageFolderDataModule",
        f"--data.root={tmp_path / 'img'}",
    ]
    built = StitchingCLI(args=args, run=False)
    assert built.model.hparams.num_classes == 3 and built.model.model.num_classes == 3


def _instantiate_only(path: Path) -> StitchingCLI:
    return StitchingCLI(args=["--config", str(path), "--trainer.logger=false"], run=False)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_build(path):
    built = _instantiate_only(path)
    assert built.model.hparams.model_name == built.config.model.init_args.model_name
    assert built.model.hparams.num_classes == built.datamodule.num_classes


def _error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ")
    return err[0]


def test_unknown_model_lists_close_matches(tiny_recipe, capsys):
    line = _error(capsys, "--config", tiny_recipe, "--model.init_args.model_name=mini_resnt")
    assert "unknown model 'mini_resnt'" in line and "mini_resnet" in line


def test_unknown_data_class_lists_ours(tiny_recipe, capsys):
    line = _error(capsys, "--config", tiny_recipe, "--data.class_path=stitching.data.DigitDataModule")
    assert "did you mean stitching.data.DigitsDataModule" in line
    assert "valid: stitching.data.CIFAR10DataModule" in line and "ImageFolderDataModule" in line


def test_unknown_keys_list_valid_options(tiny_recipe, capsys):
    line = _error(capsys, "--config", tiny_recipe, "--data.init_args.batchsize=3")
    assert "has no option 'batchsize' (did you mean batch_size" in line and "split_seed" in line
    line = _error(capsys, "--config", tiny_recipe, "--trainer.max_epocs=1")
    assert "did you mean --trainer.max_epochs" in line


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"stitching {version('stitching')}\n"


def test_fit_does_not_need_the_benchmark(tmp_path):
    """``stitching.cli`` and the model store import no benchmark, launcher or tracking module up front, and
    the store does not import the command line."""
    import subprocess
    import sys

    code = (
        "import sys, stitching.cli, stitching.zoo; "
        "print(sorted(m for m in sys.modules if m.startswith(('stitching.bench', 'stitching.launch', "
        "'stitching.tracking'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # and the store (what SLURM workers load) trains base models without the command-line module
    code = "import sys, stitching.zoo; print('stitching.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_subcommand(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    assert "did you mean fit" in err and "bench" in err and "leaderboard" in err
    assert main([]) == 0 and "usage: stitching" in capsys.readouterr().out
    assert set(cli.COMMANDS) >= {"bench", "leaderboard", "sweep"}


def test_fit_on_two_cpu_processes_with_ddp_then_test_on_one(tiny_recipe, tmp_path):
    """`--trainer.devices 2`: Lightning starts a second rank; rank 0 alone reports; `test` scores on one."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(*args):
        cmd = [sys.executable, "-m", "stitching.cli", *args, "--config", tiny_recipe, "--trainer.devices=2",
               "--trainer.accelerator=cpu"]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run("fit", "--trainer.strategy=ddp")
    assert out.count("ClassifierModule") == 1  # one summary, from rank 0
    assert "scores above come from 2 devices" in out
    ckpt = next(line.split()[-1] for line in out.splitlines() if line.startswith("checkpoint"))
    assert Path(tmp_path, ckpt).is_file()
    out = run("test", f"--ckpt_path={ckpt}")
    assert "scoring on a single device" in out and "test/acc" in out
