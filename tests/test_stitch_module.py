"""StitchModule: freeze guarantees, logged metrics, checkpoints and the `stitching fit` CLI."""

from pathlib import Path

import pytest
import torch

from stitching.adapters import AdapterConfig
from stitching.cli import main
from stitching.data import DigitsDataModule
from stitching.modules import StitchModule
from stitching.zoo import ModelSource

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def make_module(source="mini_resnet", target="mini_resnet", source_cut="layer2", target_cut="layer2", **kw):
    # Untrained (seeded random) base models: the guarantees tested here do not depend on training.
    return StitchModule(
        ModelSource(source, seed=0), ModelSource(target, seed=1), source_cut, target_cut, **kw
    )


def frozen_state(module):
    parts = ("source_front", "source_back", "target_front", "target_back")
    return {f"{p}.{k}": v.clone() for p in parts for k, v in getattr(module, p).state_dict().items()}


@pytest.mark.parametrize("init", ["lstsq", "random"])
def test_fit_changes_only_the_adapter(tmp_path, init, quick_trainer):
    module = make_module(adapter=AdapterConfig(norm="bn", init=init))
    before = frozen_state(module)
    adapter_before = {k: v.clone() for k, v in module.adapter.state_dict().items()}
    assert any("num_batches_tracked" in k for k in before)
    data = DigitsDataModule(batch_size=32)
    quick_trainer().fit(module, datamodule=data)
    after = frozen_state(module)
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"frozen {key} changed during fit"
    assert all(not p.requires_grad for n, p in module.named_parameters() if not n.startswith("adapter."))
    optimised = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.adapter.parameters()}
    assert any(not torch.equal(v, module.adapter.state_dict()[k]) for k, v in adapter_before.items())


def test_frozen_parts_stay_in_eval_mode_whatever_is_called():
    module = make_module()
    module.train()
    assert module.adapter.training
    for part in (module.source_front, module.source_back, module.target_front, module.target_back):
        assert not any(m.training for m in part.modules())


def test_logs_stitched_target_source_and_init_accuracies(tmp_path, quick_trainer):
    module = make_module(adapter=AdapterConfig(norm="bn", init="lstsq"))
    t = quick_trainer()
    data = DigitsDataModule(batch_size=32)
    t.fit(module, datamodule=data)
    assert "train/loss_epoch" in t.callback_metrics and "val/stitched_acc" in t.callback_metrics
    results = t.test(module, datamodule=data, verbose=False)[0]
    # The logged scores are those of the module's own parts on the one test batch the trainer was limited to.
    x, y = next(iter(data.test_dataloader()))
    module.eval()
    with torch.no_grad():
        h = module.source_front(x)
        logits = {
            "stitched": module(x),
            "target": module.target_back(module.target_front(x)),
            "source": module.source_back(h),
            "init_stitched": module.target_back(module.initial_adapter(h)),
        }
    for name, out in logits.items():
        top1 = (out.argmax(1) == y).float().mean().item()
        top5 = (out.topk(5, dim=1).indices == y[:, None]).any(1).float().mean().item()
        assert results[f"test/{name}_acc"] == pytest.approx(top1, abs=1e-6), name
        assert results[f"test/{name}_acc_top5"] == pytest.approx(top5, abs=1e-6), name
    # Training moved the adapter away from its initialisation, so the two stitches predict differently.
    assert not torch.equal(logits["stitched"], logits["init_stitched"])
    # The same split scored twice gives the same target accuracy: the target alone is deterministic.
    again = t.test(module, datamodule=data, verbose=False)[0]
    assert again["test/target_acc"] == results["test/target_acc"]


def test_self_stitch_with_identity_adapter_reproduces_the_model(tmp_path):
    module = StitchModule(
        ModelSource("mini_vit", seed=0),
        ModelSource("mini_vit", seed=0),
        "blocks.1",
        adapter=AdapterConfig(norm="none", init="identity"),
    )
    module.eval()
    x = torch.randn(4, 3, 32, 32)
    model = torch.nn.Sequential(module.target_front, module.target_back)
    assert torch.allclose(module(x), model(x), atol=1e-5)
    assert module.target_cut.name == "blocks.1"  # target cut defaults to the nearest depth


def test_checkpoint_holds_only_the_adapter_and_restores_it(tmp_path, quick_trainer):
    module = make_module(source="mini_vit", target="mini_resnet", source_cut=0.5, target_cut=0.5)
    t = quick_trainer(enable_checkpointing=True)
    t.fit(module, datamodule=DigitsDataModule(batch_size=32))
    path = tmp_path / "stitch.ckpt"
    t.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and all(k.startswith(("adapter.", "initial_adapter.")) for k in state)
    restored = StitchModule.load_from_checkpoint(path)
    x = torch.randn(3, 3, 32, 32)
    module.eval()
    restored.eval()
    assert torch.allclose(restored(x), module(x), atol=1e-6)


def test_unknown_cut_lists_the_valid_cuts():
    with pytest.raises(ValueError, match=r"unknown cut 'layer9'.*valid cuts:.*layer2"):
        make_module(source_cut="layer9")


SHIPPED = sorted((CONFIGS / "stitch").glob("*.yaml"))
# Untrained (seeded random) base models, so CLI tests do not train them; everything else as shipped.
UNTRAINED = [
    "--model.init_args.source={seed: 0, train: null}",
    "--model.init_args.target={seed: 1, train: null}",
]


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_shipped_stitch_configs_run_through_the_cli(config, tmp_path, capsys):
    args = [
        "fit",
        "--config",
        str(config),
        *UNTRAINED,
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "StitchModule" in out


def test_cli_reports_a_bad_cut_in_one_line(tmp_path, capsys):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "stitch" / "resnet_seed_pair.yaml"),
        *UNTRAINED,
        "--model.init_args.source_cut=layer7",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown cut 'layer7'" in err and "layer2" in err


def test_test_scores_on_a_single_device(tmp_path, capsys):
    args = [
        "test",
        "--config",
        str(CONFIGS / "stitch" / "resnet_seed_pair.yaml"),
        *UNTRAINED,
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.limit_test_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "scoring on a single device (trainer.devices=2 -> 1)" in out and "test/stitched_acc" in out


def test_fit_then_test_from_the_checkpoint_through_the_cli(tmp_path, capsys):
    config = str(CONFIGS / "stitch" / "vit_to_resnet.yaml")
    common = [*UNTRAINED, "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1"]
    fit = [
        "fit",
        "--config",
        config,
        *common,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        f"--trainer.default_root_dir={tmp_path / 'fit'}",
    ]
    assert main(fit) == 0
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")
    torch.load(ckpt, weights_only=True)  # plain data only: safe to load
    test = [
        "test",
        "--config",
        config,
        *common,
        "--trainer.limit_test_batches=1",
        f"--ckpt_path={ckpt}",
        f"--trainer.default_root_dir={tmp_path / 'test'}",
    ]
    assert main(test) == 0
    out = capsys.readouterr().out
    assert "test/stitched_acc" in out and "test/init_stitched_acc" in out
