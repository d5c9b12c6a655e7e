"""Small variants of real timm families for 32x32 RGB inputs (digits, CIFAR), registered with timm.

Each builder is a timm ``@register_model`` entrypoint with a ``pretrained_cfg`` (input size, mean/std,
first conv, classifier), so ``timm.create_model("mini_resnet")`` and ``timm.data.resolve_data_config`` work
once ``stitching.models`` is imported. Each trains on the digits data in about a minute on one CPU thread.
"""

from __future__ import annotations

from functools import partial

from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import (
    ConvNeXt,
    MobileNetV3,
    RegNet,
    ResNet,
    VisionTransformer,
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
)
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.regnet import RegNetCfg
from timm.models.resnet import BasicBlock
from torch import nn


def _cfg(first_conv: str, classifier: str, **kwargs) -> dict:
    return dict(
        url="",
        num_classes=10,
        input_size=(3, 32, 32),
        pool_size=None,
        crop_pct=1.0,
        interpolation="bilinear",
        mean=IMAGENET_INCEPTION_MEAN,  # (0.5, 0.5, 0.5): inputs scaled to [-1, 1]
        std=IMAGENET_INCEPTION_STD,
        first_conv=first_conv,
        classifier=classifier,
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "mini_resnet": _cfg("conv1", "fc"),
        "mini_resnet_d": _cfg("conv1.0", "fc"),
        "mini_vit": _cfg("patch_embed.proj", "head"),
        "mini_convnext": _cfg("stem.0", "head.fc"),
        "mini_mobilenetv3": _cfg("conv_stem", "classifier"),
        "mini_regnet": _cfg("stem.conv", "head.fc"),
    }
)


class MiniResNet(ResNet):
    """A timm ResNet whose stem keeps full resolution: 3x3 stride-1 conv (or stride-1 deep stem), no maxpool.

    timm's plain stem is a 7x7 stride-2 conv with 64 channels whatever ``stem_width`` says; at 32x32 its
    stride 4 (with the maxpool) leaves too little of the image, so the stem is rebuilt here and the
    ``feature_info`` reductions corrected.
    """

    def __init__(self, stem_type: str = "", in_chans: int = 3, **kwargs):
        # a deep stem of width w outputs 2w channels: build that way, then swap the plain stem in if asked
        super().__init__(stem_type="deep", in_chans=in_chans, **kwargs)
        width = self.conv1[-1].out_channels
        if stem_type == "deep":
            self.conv1[0].stride = (1, 1)
        else:
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        for info in self.feature_info:  # the stem no longer downsamples by 4
            info["reduction"] = max(1, info["reduction"] // 4)


@register_model
def mini_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 shape (BasicBlock, layers 2-2-2-2) with channels 16-32-64-128 and a 3x3 stride-1 stem."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), stem_width=8)
    return build_model_with_cfg(MiniResNet, "mini_resnet", pretrained, **dict(args, **kwargs))


@register_model
def mini_resnet_d(pretrained: bool = False, **kwargs) -> ResNet:
    """``mini_resnet`` with ResNet-D tweaks: a 3-conv deep stem (stride 1 here) and avg-pool shortcuts."""
    args = dict(
        block=BasicBlock, layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), stem_width=8, avg_down=True
    )
    return build_model_with_cfg(
        MiniResNet, "mini_resnet_d", pretrained, stem_type="deep", **dict(args, **kwargs)
    )


@register_model
def mini_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT with 4x4 patches on 32x32 inputs (8x8 grid + class token), width 64, depth 4, 4 heads."""
    args = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
    return build_model_with_cfg(VisionTransformer, "mini_vit", pretrained, **dict(args, **kwargs))


@register_model
def mini_convnext(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """ConvNeXt with a 2x2 patch stem (grids 16 after the stem, then 8-4-2-1 at 32x32), dims 16-32-64-128,
    depths 1-1-2-1. The 2x2 stem is ~10x cheaper than a 1x1 stem at about the same digits accuracy (0.98)."""
    args = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), patch_size=2)
    return build_model_with_cfg(
        ConvNeXt,
        "mini_convnext",
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **dict(args, **kwargs),
    )


@register_model
def mini_mobilenetv3(pretrained: bool = False, **kwargs) -> MobileNetV3:
    """MobileNetV3 blocks (depthwise-separable, inverted residuals with SE, hard-swish), strides for 32x32."""
    arch_def = [
        ["ds_r1_k3_s1_e1_c16_nre"],  # 16x16 after the stride-2 stem
        ["ir_r2_k3_s2_e4_c24_nre"],  # 8x8
        ["ir_r2_k5_s1_e4_c40_se0.25"],
        ["ir_r2_k5_s2_e6_c64_se0.25"],  # 4x4
        ["cn_r1_k1_s1_c256"],
    ]
    args = dict(
        block_args=decode_arch_def(arch_def),
        num_features=512,
        stem_size=16,
        round_chs_fn=round_channels,
        act_layer=nn.Hardswish,
        se_layer=partial(
            SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels
        ),
    )
    return build_model_with_cfg(
        MobileNetV3,
        "mini_mobilenetv3",
        pretrained,
        feature_cfg=dict(flatten_sequential=True),
        **dict(args, **kwargs),
    )


class MiniRegNet(RegNet):
    """A timm RegNet whose stem conv has stride 1 (full resolution at 32x32), ``feature_info`` corrected."""

    def __init__(self, cfg: RegNetCfg, **kwargs):
        super().__init__(cfg, **kwargs)
        self.stem.conv.stride = (1, 1)
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 2)


@register_model
def mini_regnet(pretrained: bool = False, **kwargs) -> RegNet:
    """RegNetX-style network (grouped-conv bottlenecks, widths 16-128, depths 1-2-4-1), stride-1 stem."""
    cfg = RegNetCfg(w0=16, wa=12.0, wm=2.0, group_size=8, depth=8, stem_width=16)
    return build_model_with_cfg(MiniRegNet, "mini_regnet", pretrained, model_cfg=cfg, **kwargs)
