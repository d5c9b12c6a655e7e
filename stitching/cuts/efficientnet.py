"""timm's EfficientNet family: ``EfficientNet`` (efficientnet*, mixnet, mnasnet, ...) and ``MobileNetV3``."""

from __future__ import annotations

from timm.models import EfficientNet, MobileNetV3
from torch import nn

from stitching.cuts._registry import Stage, register_splitter
from stitching.cuts._stages import blocks, head, overrides, stem


def _matches(m: nn.Module) -> bool:
    return any(isinstance(m, cls) and not overrides(m, cls, "forward_features") for cls in _CLASSES)


_CLASSES = (EfficientNet, MobileNetV3)


@register_splitter("efficientnet", matches=_matches)
def efficientnet_stages(model: nn.Module) -> list[Stage]:
    """Stem (``conv_stem, bn1``), blocks ``blocks.0.0, ..., blocks.0, blocks.1.0, ...``, then
    ``conv_head, bn2`` (EfficientNet only) and the head."""
    stages = [stem(model, ("conv_stem", "bn1"))]
    for i, stage in enumerate(model.blocks):
        stages += blocks(f"blocks.{i}", stage)
    if isinstance(model, EfficientNet):  # MobileNetV3 applies its conv_head inside forward_head
        stages += [Stage("conv_head", model.conv_head, cut=False), Stage("bn2", model.bn2, cut=False)]
    return [*stages, head(model, stages)]
