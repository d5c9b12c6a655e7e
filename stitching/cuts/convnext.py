"""ConvNeXt family (timm ``ConvNeXt``)."""

from __future__ import annotations

from timm.models import ConvNeXt
from torch import nn

from stitching.cuts._registry import Stage, register_splitter
from stitching.cuts._stages import blocks, head, overrides


@register_splitter(
    "convnext", matches=lambda m: isinstance(m, ConvNeXt) and not overrides(m, ConvNeXt, "forward_features")
)
def convnext_stages(model: nn.Module) -> list[Stage]:
    """``stem``, then per stage its downsample (not a cut) and blocks ``stages.0.blocks.0, ..., stages.0``."""
    stages = [Stage("stem", model.stem)]
    for i, stage in enumerate(model.stages):
        stages.append(Stage(f"stages.{i}.downsample", stage.downsample, cut=False))
        named = blocks(f"stages.{i}.blocks", stage.blocks)
        # the last block ends the whole stage: name it by the stage
        named[-1] = Stage(f"stages.{i}", named[-1].module)
        stages += named
    stages.append(Stage("norm_pre", model.norm_pre, cut=False))
    return [*stages, head(model, stages)]
