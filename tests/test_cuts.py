"""Cut points: back(front(x)) == model(x) for every supported family and cut; names, depths, errors."""

import itertools

import pytest
import timm
import torch
from timm.models import ResNet, VisionTransformer
from timm.models.deit import VisionTransformerDistilled
from timm.models.regnet import RegNet, RegNetCfg
from timm.models.resnet import BasicBlock
from torch import nn

import stitching.models  # noqa: F401  (registers mini_*)
from stitching.cuts import CutPoint, UnsupportedModelError, list_cuts, list_families, split_model
from stitching.cuts._registry import find_splitter


def _timm(name, size=None):
    return lambda: (timm.create_model(name), size)


def _vit(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
    return lambda: (VisionTransformer(**dict(args, **kw)), (3, 32, 32))


# (family, model factory -> (model, input_size or None for the model's default))
MODELS = {
    "resnet/test_resnet": ("resnet", _timm("test_resnet", (3, 64, 64))),
    "resnet/mini_resnet": ("resnet", _timm("mini_resnet")),
    "resnet/mini_resnet_d": ("resnet", _timm("mini_resnet_d")),
    "resnet/deep_stem_d": (
        "resnet",
        lambda: (
            ResNet(
                BasicBlock,
                (1, 2, 1, 1),
                channels=(8, 16, 24, 32),
                stem_type="deep_tiered",
                stem_width=8,
                avg_down=True,
                num_classes=10,
            ),
            (3, 64, 64),
        ),
    ),
    "vit/test_vit": ("vit", _timm("test_vit", (3, 64, 64))),
    "vit/test_vit2_reg_no_cls": ("vit", _timm("test_vit2", (3, 64, 64))),
    "vit/test_vit3_map_pool": ("vit", _timm("test_vit3")),
    "vit/test_vit4_rmsnorm": ("vit", _timm("test_vit4", (3, 64, 64))),
    "vit/mini_vit": ("vit", _timm("mini_vit")),
    "vit/cls_reg4": ("vit", _vit(reg_tokens=4)),
    "vit/no_embed_class": ("vit", _vit(reg_tokens=2, no_embed_class=True)),
    "vit/deit_distilled": (
        "vit",
        lambda: (
            VisionTransformerDistilled(
                img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10
            ),
            (3, 32, 32),
        ),
    ),
    "convnext/test_convnext": ("convnext", _timm("test_convnext", (3, 64, 64))),
    "convnext/test_convnext2": ("convnext", _timm("test_convnext2", (3, 64, 64))),
    "convnext/test_convnext3": ("convnext", _timm("test_convnext3", (3, 64, 64))),
    "convnext/mini_convnext": ("convnext", _timm("mini_convnext")),
    "efficientnet/test_efficientnet": ("efficientnet", _timm("test_efficientnet", (3, 64, 64))),
    "efficientnet/test_efficientnet_gn": ("efficientnet", _timm("test_efficientnet_gn", (3, 64, 64))),
    "efficientnet/test_efficientnet_ln": ("efficientnet", _timm("test_efficientnet_ln", (3, 64, 64))),
    "efficientnet/test_efficientnet_evos": ("efficientnet", _timm("test_efficientnet_evos", (3, 64, 64))),
    "efficientnet/mini_mobilenetv3": ("efficientnet", _timm("mini_mobilenetv3")),
    "regnet/mini_regnet": ("regnet", _timm("mini_regnet")),
    "regnet/regnety_se": (
        "regnet",
        lambda: (
            RegNet(
                RegNetCfg(w0=8, wa=8.0, wm=2.0, group_size=8, depth=6, stem_width=8, se_ratio=0.25),
                num_classes=10,
            ),
            (3, 64, 64),
        ),
    ),
    # generic torch.fx fallback on timm families without a splitter
    "fx/test_byobnet": (None, _timm("test_byobnet", (3, 64, 64))),
}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(key):
        if key not in cache:
            torch.manual_seed(0)
            model, size = MODELS[key][1]()
            cache[key] = (model.eval(), size)
        return cache[key]

    return get


@pytest.mark.parametrize("key", list(MODELS))
def test_back_of_front_is_the_model_at_every_cut_and_depths_rise(built, key):
    model, size = built(key)
    family = MODELS[key][0]
    splitter = find_splitter(model)
    assert (splitter.name if splitter else None) == family
    cuts = list_cuts(model, size)
    depths = [c.depth for c in cuts]
    assert len(cuts) >= 4 and len({c.name for c in cuts}) == len(cuts)
    assert depths[0] == 0.0 and depths[-1] == 1.0 and all(a < b for a, b in itertools.pairwise(depths))
    size = size or model.pretrained_cfg["input_size"]
    x = torch.randn(2, *size)
    with torch.no_grad():
        y = model(x)
        for cut in cuts:
            front, back = split_model(model, cut.name, input_size=size)
            a = front(x)
            assert a.shape[1:] == cut.spec.shape, cut  # the spec is the real activation
            assert (back(a) - y).abs().max().item() <= 1e-5, cut.name


def test_cut_names_follow_module_paths(built):
    resnet, _ = built("resnet/mini_resnet")
    assert [c.name for c in list_cuts(resnet)] == [
        "act1", "layer1.0", "layer1", "layer2.0", "layer2", "layer3.0", "layer3", "layer4.0", "layer4",
    ]  # fmt: skip
    convnext, size = built("convnext/test_convnext")
    names = [c.name for c in list_cuts(convnext, size)]
    assert names[:4] == ["stem", "stages.0", "stages.1.blocks.0", "stages.1"]
    vit, _ = built("vit/mini_vit")
    assert [c.name for c in list_cuts(vit)] == ["norm_pre", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    regnet, _ = built("regnet/mini_regnet")
    assert [c.name for c in list_cuts(regnet)][:4] == ["stem", "s1", "s2.b1", "s2"]
    for name in (c.name for c in list_cuts(resnet)):
        resnet.get_submodule(name)  # every name is a real module path


def test_token_specs_count_prefix_tokens(built):
    expected = {"vit/mini_vit": 1, "vit/cls_reg4": 5, "vit/deit_distilled": 2, "vit/test_vit2_reg_no_cls": 1}
    for key, prefix in expected.items():
        model, size = built(key)
        for cut in list_cuts(model, size):
            assert cut.layout == "nld" and cut.num_prefix_tokens == prefix == model.num_prefix_tokens
    spec = list_cuts(*built("vit/mini_vit"))[0].spec
    assert spec.grid == (8, 8) and spec.shape == (65, 64)


def test_spec_and_reduction_at_default_input_size(built):
    model, _ = built("resnet/mini_resnet")
    by_name = {c.name: c for c in list_cuts(model)}
    assert by_name["layer2"].spec.shape == (32, 16, 16) and by_name["layer2"].reduction == 2
    assert by_name["layer4"].channels == 128 and by_name["layer4"].reduction == 8


def test_nearest_depth_and_cutpoint_selection(built):
    model, _ = built("resnet/mini_resnet")  # 9 cuts: depths 0, 1/8, ..., 1
    assert split_model(model, 0.0)[0].stage_names[-1] == "act1"
    assert split_model(model, 1.0)[0].stage_names[-1] == "layer4"
    assert split_model(model, 0.3)[0].stage_names[-1] == "layer1"  # 0.25 is nearest
    assert split_model(model, 0.4)[0].stage_names[-1] == "layer2.0"  # 0.375
    cut = list_cuts(model)[3]
    assert isinstance(cut, CutPoint) and split_model(model, cut)[0].stage_names[-1] == cut.name


def test_bad_cuts_list_the_valid_ones(built):
    model, _ = built("resnet/mini_resnet")
    with pytest.raises(
        ValueError, match=r"unknown cut 'layer22'; did you mean layer2\b.*valid cuts: act1, layer1.0,"
    ) as err:
        split_model(model, "layer22")
    assert "layer4.0" in str(err.value)
    for bad in (1.5, -0.1, True, None):
        with pytest.raises(ValueError, match="cut must be"):
            split_model(model, bad)


def test_front_and_back_share_the_model_parameters(built):
    model, size = built("vit/deit_distilled")
    front, back = split_model(model, "blocks.1")
    own = {id(p) for p in model.parameters()}
    f, b = {id(p) for p in front.parameters()}, {id(p) for p in back.parameters()}
    assert f | b == own and not f & b  # every parameter in exactly one half, none copied
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.add_(1.0)  # a change to the model shows in the front
        x = torch.randn(1, *size)
        assert torch.equal(back(front(x)), model(x))


def test_eval_on_the_halves_reaches_every_module():
    model = timm.create_model("mini_resnet", drop_rate=0.5).train()
    front, back = split_model(model, "layer2")
    front.eval(), back.eval()
    # every module that computes is in eval mode (pure containers such as `layer1` do nothing themselves)
    assert not model.training and not any(m.training for m in model.modules() if not list(m.children()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(front(x)), model(x))  # head dropout is off too


def test_fx_fallback_names_modules_and_families_have_priority(built):
    model, size = built("fx/test_byobnet")
    assert find_splitter(model) is None
    assert [c.name for c in list_cuts(model, size)][:3] == ["stem", "stages.0", "stages.1"]
    assert set(list_families()) == {"resnet", "vit", "convnext", "efficientnet", "regnet"}


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = self.a(x)
        return self.b(x) if x.mean() > 0 else x  # control flow on a value: torch.fx cannot trace it


def test_untraceable_model_is_unsupported_with_the_families_listed():
    with pytest.raises(UnsupportedModelError, match=r"_DataDependent is not supported.*resnet, vit"):
        list_cuts(_DataDependent(), (3, 16, 16))
    with pytest.raises(UnsupportedModelError, match="Supported families"):
        list_cuts(timm.create_model("test_mambaout"), (3, 64, 64))  # channels-last: no NCHW activation


def test_get_cut_resolves_names_depths_and_cutpoints_like_split_model():
    from stitching.cuts import get_cut

    model = timm.create_model("mini_resnet")
    cuts = list_cuts(model)
    assert get_cut(model, "layer2") == next(c for c in cuts if c.name == "layer2")
    assert get_cut(model, 0.5).name == "layer2" and get_cut(model, 0.3).name == "layer1"
    assert get_cut(model, cuts[3]) == cuts[3]
    with pytest.raises(ValueError, match="unknown cut 'layer22'; did you mean layer2"):
        get_cut(model, "layer22")
