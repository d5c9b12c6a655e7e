"""One core under `stitching fit` and `stitching bench`: a benchmark cell exported with `--export-fit` and
re-run through the Lightning CLI gives the cell's numbers (identical least-squares accuracy; the stitched
accuracy within one test image), at the same seeds."""

from pathlib import Path

import pytest
import torch
import yaml

from stitching.bench.cell import run_cell
from stitching.bench.export import export_fit
from stitching.bench.grid import expand_suite
from stitching.bench.suite import suite_from_dict
from stitching.cli import main
from stitching.core.training import EpochOrderSampler, epoch_order
from stitching.lightning_cli import StitchingCLI

ROOT = Path(__file__).resolve().parents[1]
SMALL_TRAIN = str(ROOT / "tests" / "data" / "train_small.yaml")  # real accuracy: no near-ties


def _suite(epochs: int = 2, init: str = "lstsq"):
    return suite_from_dict(
        {
            "name": "equivalence",
            "version": "1",
            "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"batch_size": 64}},
            "models": {"resnet": {"name": "mini_resnet", "train": SMALL_TRAIN, "seeds": [0, 1]}},
            "pairs": {"mode": "same_arch", "include_self": False},
            "cuts": {"depths": [0.5]},
            "adapters": [{"norm": "bn"}],
            "inits": [init],
            "stitch_seeds": [3],
            "recipe": {"epochs": epochs, "batch_size": 128, "lr": 3e-3},
            "controls": [],
            "metrics": [],
        }
    )


def _fit_then_test(config: Path, root: Path) -> dict[str, float]:
    common = ["--config", str(config), "--trainer.default_root_dir", str(root)]
    fit = StitchingCLI(args=["fit", *common, "--trainer.enable_progress_bar", "false"])
    checkpoint = fit.trainer.checkpoint_callback.best_model_path
    assert checkpoint and Path(checkpoint).is_file()
    test = StitchingCLI(args=["test", *common, "--ckpt_path", checkpoint])
    return {k: float(v) for k, v in test.trainer.callback_metrics.items()}


def test_epoch_order_sampler_replays_the_cached_loops_order():
    sampler = EpochOrderSampler(50, seed=7)
    generator = torch.Generator().manual_seed(7)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        expected = torch.randperm(50, generator=generator)
        assert list(sampler) == expected.tolist() == epoch_order(50, 7, epoch).tolist()
    assert epoch_order(50, 7, 0).tolist() != epoch_order(50, 8, 0).tolist()


@pytest.mark.slow
def test_a_cell_rerun_through_stitching_fit_gives_the_benchmark_numbers(tmp_path):
    cell = expand_suite(_suite())[0]
    record = run_cell(cell, tmp_path / "results")
    config = export_fit(cell, tmp_path / "cell.yaml", accelerator="cpu")
    exported = yaml.safe_load(config.read_text())
    assert exported["trainer"]["max_epochs"] == 2 and exported["model"]["init_args"]["seed"] == 3
    assert exported["data"]["init_args"] == {
        "dataset": cell.config.dataset, "order_seed": 3, "batch_size": 128
    }  # fmt: skip

    scores = _fit_then_test(config, tmp_path / "fit")
    bench, one_image = record["metrics"], 1 / 270
    assert scores["test/target_acc"] == pytest.approx(bench["target_acc"], abs=1e-6)
    assert scores["test/init_stitched_acc"] == pytest.approx(bench["lstsq_acc"], abs=1e-6)  # identical
    assert abs(scores["test/stitched_acc"] - bench["stitched_acc"]) <= one_image + 1e-6
    assert record["training"]["steps"] == 2 * 10  # 1257 training images, batches of 128, two epochs


@pytest.mark.slow
def test_export_fit_from_the_command_line_writes_a_config_stitching_fit_accepts(tmp_path, capsys):
    suite_path = tmp_path / "suite.yaml"
    suite = _suite(epochs=1, init="random")
    raw = yaml.safe_load((ROOT / "benchmarks" / "digits.yaml").read_text())
    models = {"resnet": {"name": "mini_resnet", "train": SMALL_TRAIN, "seeds": [0, 1]}}
    raw.update(name=suite.name, models=models)
    raw.update(pairs={"mode": "same_arch", "include_self": False}, cuts={"depths": [0.5]}, metrics=[])
    suite_path.write_text(yaml.safe_dump(raw))
    cells = expand_suite(suite_from_dict(raw))
    out = tmp_path / "exported"
    assert main(["bench", str(suite_path), "--export-fit", cells[1].cell_id, "--export-dir", str(out)]) == 0
    config = out / f"{cells[1].cell_id}.yaml"
    assert config.is_file() and str(config) in capsys.readouterr().out
    exported = yaml.safe_load(config.read_text())
    assert exported["model"]["init_args"]["source"]["seed"] == cells[1].config.source.seed
    assert exported["model"]["init_args"]["source_cut"] == cells[1].config.source_cut
    assert main(["bench", str(suite_path), "--export-fit", "nosuchcell", "--export-dir", str(out)]) == 2
