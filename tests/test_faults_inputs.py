"""Fault injection, inputs side: broken training configs, diverging training, a cell that fails after
training, bad command lines and checkpoints, cuts of ViTs at their own input size. Each case must end in a
clear message (no traceback) or a correct result, and lose no finished work (issue 14)."""

import copy
import json
import os
import shutil

import pytest
import torch
import yaml
from conftest import TINY_TRAIN
from torch import nn

import stitching.bench.cell as cell_module
from stitching.bench.cell import run_cell
from stitching.bench.grid import expand_suite
from stitching.bench.store import ResultStore
from stitching.bench.suite import load_suite
from stitching.core.optim import Recipe
from stitching.core.training import TrainOptions, train_adapter

SMALL_DIGITS = {
    "class_path": "stitching.data.DigitsDataModule",
    "init_args": {"image_size": 16, "val_fraction": 0.3, "test_fraction": 0.4},
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One model store for the module (base models trained once), picked up by fresh cell contexts."""
    path = tmp_path_factory.mktemp("stitching-cache")
    old = os.environ.get("STITCHING_CACHE")
    os.environ["STITCHING_CACHE"] = str(path)
    cell_module._CONTEXTS.clear()
    yield path
    if old is None:
        os.environ.pop("STITCHING_CACHE")
    else:
        os.environ["STITCHING_CACHE"] = old
    cell_module._CONTEXTS.clear()


def _one_cell_suite(path, write_suite, **overrides):
    """A suite of one cell: mini_resnet (seed 0) stitched into itself at depth 0.5, on small 16x16 digits."""
    models = {"resnet": {"name": "mini_resnet", "train": overrides.pop("train", TINY_TRAIN), "seeds": [0]}}
    return write_suite(
        path, models=models, pairs={"mode": "same_arch", "include_self": True}, dataset=SMALL_DIGITS,
        permutations=20, **overrides,
    )  # fmt: skip


# --- cell ids follow what determines the result -------------------------------------------------------------


def _ids(path, write_suite, train) -> set[str]:
    return {c.cell_id for c in expand_suite(load_suite(_one_cell_suite(path, write_suite, train=str(train))))}


def test_cell_id_follows_the_training_configs_content_not_its_path(tmp_path, write_suite):
    config = tmp_path / "a" / "train.yaml"
    config.parent.mkdir()
    shutil.copy(TINY_TRAIN, config)
    before = _ids(tmp_path / "s.yaml", write_suite, config)
    moved = tmp_path / "b" / "elsewhere.yaml"
    moved.parent.mkdir()
    shutil.copy(config, moved)
    assert _ids(tmp_path / "m.yaml", write_suite, moved) == before, "same content at another path: same cell"
    edited = yaml.safe_load(config.read_text())
    edited["trainer"]["max_epochs"] = 2
    config.write_text(yaml.safe_dump(edited))
    after = _ids(tmp_path / "s.yaml", write_suite, config)
    assert after.isdisjoint(before), "an edited training config must not reuse the old cells' results"
    config.write_text("# a comment changes nothing\n" + yaml.safe_dump(edited))
    assert _ids(tmp_path / "s.yaml", write_suite, config) == after


def test_cells_without_a_training_config_keep_their_ids(write_suite, tmp_path):
    suite = load_suite(
        write_suite(tmp_path / "s.yaml", models={"r": {"name": "mini_resnet", "seeds": [0, 1]}})
    )
    for cell in expand_suite(suite):
        assert "train_digest" not in cell.config.identity()["source"]
        assert cell.config.source.train_digest is None
    trained = expand_suite(load_suite(write_suite(tmp_path / "t.yaml")))[0]
    assert trained.config.identity()["source"]["train"].startswith("sha256:")
    assert trained.config.to_dict()["source"]["train"] == TINY_TRAIN, "the record still names the file"


# --- diverged training --------------------------------------------------------------------------------------


class _Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.head.requires_grad_(False)

    def forward(self, z):
        return self.head(z)


def test_training_stops_at_the_first_non_finite_epoch_and_says_so():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    adapter = nn.Linear(4, 4)
    for lr in (float("inf"), 1e38):  # a NaN training loss; a finite one with an infinite validation loss
        recipe = Recipe(optimizer="sgd", lr=lr, epochs=5, batch_size=16)
        log = train_adapter(adapter, _Frozen(), x, y, recipe, TrainOptions(val=(x, y)))
        assert log.diverged_epoch == 1
        assert len(log.epochs) == 1, "no epoch after the loss stopped being finite"
        assert log.converged is False
    fine = train_adapter(nn.Linear(4, 4), _Frozen(), x, y, Recipe(lr=1e-2, epochs=2, batch_size=16))
    assert fine.diverged_epoch is None and len(fine.epochs) == 2


def test_corrupt_resume_checkpoint_is_set_aside_with_a_warning(tmp_path):
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    checkpoint = tmp_path / "adapter.pt"
    checkpoint.write_bytes(os.urandom(300))
    with pytest.warns(UserWarning, match="adapter.pt.*corrupt or not a checkpoint"):
        log = train_adapter(
            nn.Linear(4, 4),
            _Frozen(),
            x,
            y,
            Recipe(epochs=1, batch_size=16),
            TrainOptions(checkpoint=checkpoint),
        )
    assert len(log.epochs) == 1 and (tmp_path / "adapter.pt.corrupt").is_file()


def test_diverged_cell_is_recorded_as_diverged_not_as_an_accuracy(cache_dir, tmp_path, write_suite):
    suite = _one_cell_suite(
        tmp_path / "d.yaml", write_suite, recipe={"optimizer": "sgd", "lr": 1e38, "epochs": 3}, metrics=[]
    )
    (cell,) = expand_suite(load_suite(suite))
    record = run_cell(cell, tmp_path / "results")
    assert record["training"]["diverged_epoch"] == 1 and record["training"]["epochs_run"] == 1
    assert record["metrics"]["stitched_acc"] is None and record["metrics"]["penalty"] is None
    assert record["metrics"]["control_acc"] is None
    assert record["metrics"]["target_acc"] > 0  # what did not diverge is still measured
    assert "penalty" not in record["statistics"]["intervals"]
    text = (tmp_path / "results" / "cells" / f"{cell.cell_id}.json").read_text()
    assert "NaN" not in text and "Infinity" not in text, "no bare NaN in a record"
    assert json.loads(text)["metrics"]["stitched_acc"] is None
    _diverged_rows_are_flagged_and_ranked_last(record)


def _diverged_rows_are_flagged_and_ranked_last(diverged: dict) -> None:
    from stitching.bench.leaderboard import leaderboard, records_to_frame

    def variant(cell_id, stitch_seed=0, cut=None):
        record = copy.deepcopy(diverged)
        record["cell_id"], record["config"]["stitch_seed"] = cell_id, stitch_seed
        record["config"]["source_cut"] = cut or record["config"]["source_cut"]
        record["metrics"].update(stitched_acc=0.5, penalty=0.1)
        record["training"]["diverged_epoch"] = None
        return record

    fine_seed, other_cut = variant("seed1", stitch_seed=1), variant("othercut", cut="elsewhere")
    board = leaderboard(records_to_frame([diverged, fine_seed, other_cut]))
    mixed = board[board.source_cut != "elsewhere"].iloc[0]
    assert mixed["diverged"] == 1 and mixed["n"] == 2 and "diverged (1 of 2 cells" in mixed["flag"]
    assert mixed["rank"] > board[board.source_cut == "elsewhere"].iloc[0]["rank"]


# --- a failure inside a cell keeps what it computed ------------------------------------------------------


def test_failure_after_training_keeps_the_adapter_and_the_rerun_resumes(
    cache_dir, tmp_path, write_suite, monkeypatch
):
    suite = _one_cell_suite(tmp_path / "f.yaml", write_suite, recipe={"epochs": 2}, metrics=["linear_cka"])
    (cell,) = expand_suite(load_suite(suite))
    store = tmp_path / "results"

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in the alignment step")

    monkeypatch.setattr(cell_module, "permutation_test", broken)
    with pytest.raises(RuntimeError, match="injected"):
        run_cell(cell, store)
    work = store / "work" / cell.cell_id
    assert (work / "adapter.pt").is_file() or (work / "adapters.pt").is_file(), "the trained adapter is kept"
    assert not ResultStore(store).has(cell.cell_id)
    monkeypatch.undo()
    record = run_cell(cell, store)
    assert record["training"]["resumed_from_epoch"] == 2, "training is not repeated"
    assert "linear_cka" in record["metrics"]
    assert not work.exists(), "checkpoints go once the record exists"


# --- cuts of a ViT at its own input size ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}),
        ("vit_tiny_patch16_224", {"img_size": (32, 48), "patch_size": 8}),
        ("deit_tiny_distilled_patch16_224", {"img_size": 32, "patch_size": 8}),
        ("vit_tiny_patch16_224", {"img_size": 384, "depth": 2}),
    ],
    ids=["vit32", "vit32x48", "deit32", "vit384"],
)
def test_vit_cuts_at_the_models_own_input_size(name, options):
    from stitching.cuts import list_cuts, split_model
    from stitching.models import create_model

    torch.manual_seed(0)
    model = create_model(name, pretrained=False, **options).eval()
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 224, 224), "timm keeps the pretrained size"
    size = options["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    patch = options.get("patch_size", 16)
    cuts = list_cuts(model)
    assert len(cuts) == len(model.blocks) + 1
    assert all(c.spec.grid == (height // patch, width // patch) for c in cuts)
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        expected = model(x)
        for cut in cuts:
            front, back = split_model(model, cut)
            torch.testing.assert_close(back(front(x)), expected, msg=f"cut {cut.name}")


# --- the command line -----------------------------------------------------------------------------------


def test_a_depth_given_as_text_is_a_depth():
    from stitching.cuts import get_cut
    from stitching.models import create_model
    from stitching.modules import StitchModule
    from stitching.zoo import ModelSource

    model = create_model("mini_resnet")
    assert get_cut(model, "0.5") == get_cut(model, 0.5)
    with pytest.raises(ValueError, match=r"unknown cut 'layer9'.*or a depth in \[0, 1\]"):
        get_cut(model, "layer9")
    with pytest.raises(ValueError, match=r"depth in \[0, 1\].*got 1.5"):
        get_cut(model, "1.5")
    module = StitchModule(ModelSource("mini_resnet"), ModelSource("mini_resnet", seed=1), source_cut="0.5")
    assert module.source_cut == get_cut(model, 0.5)


def _bad_checkpoints(folder) -> dict:
    """Files that are not loadable checkpoints, by what is wrong with them."""
    import pickle

    folder.mkdir()
    good = folder / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, good)
    files = {
        "random": os.urandom(1000),
        "empty": b"",
        "text": b"seed_everything: 0\n",
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "pickle4": pickle.dumps(print),  # a pickle, but not torch's: foreign bytes to the weights-only reader
    }
    torch.save({"hook": print}, folder / "code.ckpt")  # names a function: refused, never unpickled
    paths = {"code": folder / "code.ckpt"}
    for name, data in files.items():
        paths[name] = folder / f"{name}.ckpt"
        paths[name].write_bytes(data)
    return paths


def test_checkpoint_errors_name_the_file_and_what_is_wrong(tmp_path):
    from stitching.models import CheckpointError, read_checkpoint

    for name, path in _bad_checkpoints(tmp_path / "ck").items():
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
        assert ("refused" if name == "code" else "corrupt or not a checkpoint") in message


def test_refused_ckpt_path_is_one_line(tiny_recipe, tmp_path, capsys, monkeypatch):
    from stitching.cli import main

    monkeypatch.chdir(tmp_path)
    paths = _bad_checkpoints(tmp_path / "ck")
    for name in ("random", "truncated", "code"):  # every kind goes through read_checkpoint (above)
        path = paths[name]
        with pytest.raises(SystemExit) as exit_info:
            main(["test", "--config", tiny_recipe, f"--ckpt_path={path}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --ckpt_path: {str(path)!r}") and "Traceback" not in err, name


def test_unknown_model_leaves_nothing_in_the_model_store(tmp_path, monkeypatch):
    from stitching.models import UnknownModelError
    from stitching.zoo import ModelSource, load_model

    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnknownModelError, match="unknown model 'mini_resnt'; did you mean mini_resnet"):
        load_model(ModelSource("mini_resnt", train=TINY_TRAIN))
    assert not (tmp_path / "cache").exists()


def _bench_error(capsys, *args) -> str:
    from stitching.cli import main

    assert main(["bench", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_bench_options_that_cannot_work_here_fail_once_before_any_cell(tmp_path, capsys, write_suite):
    suite = write_suite(tmp_path / "s.yaml")
    results = tmp_path / "results"
    err = _bench_error(capsys, suite, "--results", results, "--no-wait")
    assert "drop --no-wait (or use --executor slurm)" in err
    if not torch.cuda.is_available():
        err = _bench_error(capsys, suite, "--results", results, "--trainer.accelerator", "cuda")
        assert "torch sees 0 here" in err and "--trainer.accelerator cpu" in err
    assert not results.exists(), "nothing ran"


def test_a_misspelled_seed_placeholder_is_found_by_the_dry_run(tmp_path, capsys, write_suite):
    models = {"r": {"name": "mini_resnet", "checkpoint": str(tmp_path / "r_{sed}.ckpt"), "seeds": [0]}}
    err = _bench_error(capsys, write_suite(tmp_path / "s.yaml", models=models), "--dry-run")
    assert "models.r.checkpoint" in err and "not a valid template" in err and "{seed}" in err


# --- degenerate activations: the cases the metric tests leave out -------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ridge_r2_refuses_an_all_zero_held_out_target(dtype):
    from stitching.metrics import DegenerateActivationError
    from stitching.metrics.functional import ridge_r2

    g = torch.Generator().manual_seed(0)
    x, y, x_test = (torch.randn(n, 4, generator=g, dtype=dtype) for n in (30, 30, 10))
    for y_test in (torch.zeros(10, 4, dtype=dtype), torch.full((10, 4), 0.1, dtype=dtype)):
        with pytest.raises(DegenerateActivationError, match="y_test is constant"):
            ridge_r2(x, y, x_test=x_test, y_test=y_test)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["constant", "zeros", "identical rows", "nan", "inf"])
def test_streaming_metrics_reject_degenerate_inputs_on_either_side_over_batches(case, dtype):
    from stitching.metrics import CKNNA, DebiasedCKA, DegenerateActivationError, LinearCKA, MutualKNN

    g = torch.Generator().manual_seed(1)
    good = torch.randn(24, 5, generator=g, dtype=dtype)
    bad = {
        "constant": torch.full((24, 5), 0.1, dtype=dtype),
        "zeros": torch.zeros(24, 5, dtype=dtype),
        "identical rows": torch.randn(1, 5, generator=g, dtype=dtype).expand(24, 5).clone(),
    }.get(case)
    if bad is None:
        bad = torch.randn(24, 5, generator=g, dtype=dtype)
        bad[20, 2] = float(case)  # in the second batch
    for pair in ((bad, good), (good, bad)):
        for metric in (LinearCKA(5), DebiasedCKA(), MutualKNN(topk=3), CKNNA(topk=3)):
            with pytest.raises(DegenerateActivationError):
                metric.update(pair[0][:12], pair[1][:12])
                metric.update(pair[0][12:], pair[1][12:])
                metric.compute()


# --- suites: every problem at once ----------------------------------------------------------------------


def test_a_suite_with_many_mistakes_lists_them_all_unknown_keys_included(tmp_path, capsys, write_suite):
    missing = str(tmp_path / "nope.yaml")
    suite = write_suite(
        tmp_path / "bad.yaml",
        name="../../x",
        colour="red",
        dataset={"class_path": "stitching.data.DigitsDataModule", "init_args": {"batchsize": 3}},
        models={
            "a": {"name": "mini_resnet", "seeds": [0, 0], "train": missing},
            "b": {"name": "mini_resnet", "seeds": [0, 0], "train": missing},
        },
        recipe={"epochs": -1, "batch_size": 0, "lr": -0.1},
        metric_samples=0,
        stitch_seeds=[1, 1],
    )
    err = _bench_error(capsys, suite, "--dry-run")
    assert f"{suite}: 13 problem(s)" in err
    for expected in (
        "unknown key 'colour'",
        "recipe.epochs: -1",
        "recipe.batch_size: 0",
        "recipe.lr: -0.1",
        "metric_samples: 0",
        "'../../x' is not a plain directory name",
        "stitch_seeds: [1, 1] repeats a seed",
        "models.a.seeds: [0, 0]",
        "models.b: the same model as models.a",
        "models.a.train: no file",
        "has no argument 'batchsize'; did you mean batch_size?",
    ):
        assert expected in err


def test_a_missing_dataset_folder_fails_before_any_cell(tmp_path, capsys, write_suite):
    dataset = {
        "class_path": "stitching.data.CIFAR10DataModule",
        "init_args": {"data_dir": str(tmp_path / "no")},
    }
    suite = write_suite(tmp_path / "s.yaml", dataset=dataset)
    err = _bench_error(capsys, suite, "--results", tmp_path / "results")
    assert (
        f"dataset.init_args.data_dir: no folder '{tmp_path / 'no'}' here" in err and "download: true" in err
    )
    assert not (tmp_path / "results").exists()
