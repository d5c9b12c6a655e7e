"""ResNet family (timm ``ResNet``: resnet*, resnet*d deep-stem variants, resnext, seresnet, ...)."""

from __future__ import annotations

from timm.models import ResNet
from torch import nn

from stitching.cuts._registry import Stage, register_splitter
from stitching.cuts._stages import blocks, head, overrides, stem


@register_splitter(
    "resnet", matches=lambda m: isinstance(m, ResNet) and not overrides(m, ResNet, "forward_features")
)
def resnet_stages(model: nn.Module) -> list[Stage]:
    """Stem (conv1 .. maxpool), then one stage per block: ``layer1.0, layer1, layer2.0, ..., layer4``."""
    stages = [stem(model, ("conv1", "bn1", "act1", "maxpool"))]
    for i in range(1, 5):
        stages += blocks(f"layer{i}", getattr(model, f"layer{i}"))
    return [*stages, head(model, stages)]
