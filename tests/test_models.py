"""create_model / list_models: timm delegation, mini_* variants, local checkpoints and their errors."""

import pytest
import timm
import torch

from stitching.models import UnknownModelError, create_model, list_models

MINIS = ["mini_convnext", "mini_mobilenetv3", "mini_regnet", "mini_resnet", "mini_resnet_d", "mini_vit"]


def test_minis_are_registered_with_timm():
    assert list_models("mini_*") == MINIS
    assert set(MINIS) <= set(timm.list_models())


@pytest.mark.parametrize("name", MINIS)
def test_mini_models_take_32x32_rgb_and_resolve_their_data_config(name):
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["num_classes"] == 10
    model.get_submodule(model.pretrained_cfg["first_conv"])
    model.get_submodule(model.pretrained_cfg["classifier"])
    assert create_model(name, num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("name", ["mini_resnet", "mini_resnet_d", "mini_regnet"])
def test_feature_info_reductions_match_the_real_feature_maps(name):
    model = create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 32, 32))
    assert [32 // f.shape[-1] for f in feats] == model.feature_info.reduction()
    assert feats[0].shape[-1] == 32  # the stem keeps full resolution


def test_any_timm_name_is_created():
    model = create_model("test_resnet", num_classes=7)
    assert isinstance(model, timm.models.ResNet) and model.num_classes == 7


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean mini_resnet") as err:
        create_model("mini_resnte")
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet_18")


def _same_outputs(a, b):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "state_dict_ema", "lightning"])
def test_checkpoint_formats_load(tmp_path, wrap):
    src = create_model("mini_resnet")
    sd = src.state_dict()
    ckpt = {
        "raw": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd},
        "state_dict_ema": {"state_dict_ema": sd},
        # our ClassifierModule keeps the network as `self.model`; Lightning adds the prefix and hparams
        "lightning": {
            "state_dict": {f"model.{k}": v for k, v in sd.items()} | {"criterion.weight": torch.ones(10)},
            "hyper_parameters": {"model_name": "mini_resnet"},
        },
    }[wrap]
    torch.save(ckpt, tmp_path / "w.ckpt")
    loaded = create_model("mini_resnet", checkpoint_path=tmp_path / "w.ckpt")
    assert _same_outputs(src, loaded)


def test_checkpoint_of_another_model_names_both(tmp_path):
    sd = {f"model.{k}": v for k, v in create_model("mini_vit").state_dict().items()}
    torch.save({"state_dict": sd, "hyper_parameters": {"model_name": "mini_vit"}}, tmp_path / "vit.ckpt")
    with pytest.raises(ValueError, match="holds a 'mini_vit' model, but the model created is 'mini_resnet'"):
        create_model("mini_resnet", checkpoint_path=tmp_path / "vit.ckpt")
    torch.save(create_model("mini_resnet_d").state_dict(), tmp_path / "d.pth")  # no name recorded
    with pytest.raises(ValueError, match=r"not a checkpoint of mini_resnet .*(missing|unexpected): conv1\."):
        create_model("mini_resnet", checkpoint_path=tmp_path / "d.pth")


def test_head_of_another_size_fails_unless_dropped(tmp_path):
    src = create_model("mini_resnet", num_classes=5)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"classifier of another size .*num_classes=5 or drop_head=True"):
        create_model("mini_resnet", checkpoint_path=tmp_path / "w.pth")
    assert _same_outputs(src, create_model("mini_resnet", num_classes=5, checkpoint_path=tmp_path / "w.pth"))
    dropped = create_model("mini_resnet", checkpoint_path=tmp_path / "w.pth", drop_head=True)
    assert dropped.fc.out_features == 10 and torch.equal(
        dropped.layer1[0].conv1.weight, src.layer1[0].conv1.weight
    )


def test_file_without_weights_is_rejected(tmp_path):
    torch.save({"epoch": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="holds no state_dict"):
        create_model("mini_resnet", checkpoint_path=tmp_path / "x.pt")
