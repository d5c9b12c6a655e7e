"""RegNet family (timm ``RegNet``: regnetx/y/z/v)."""

from __future__ import annotations

import re

from timm.models import RegNet
from torch import nn

from stitching.cuts._registry import Stage, register_splitter
from stitching.cuts._stages import blocks, head, overrides


@register_splitter(
    "regnet", matches=lambda m: isinstance(m, RegNet) and not overrides(m, RegNet, "forward_features")
)
def regnet_stages(model: nn.Module) -> list[Stage]:
    """``stem``, blocks ``s1.b1, ..., s1, s2.b1, ..., s4``, then ``final_conv`` and the head."""
    stages = [Stage("stem", model.stem)]
    for name, stage in model.named_children():
        if re.fullmatch(r"s\d+", name):  # s1 .. s4 (as many as the config's widths give)
            stages += blocks(name, stage)
    stages.append(Stage("final_conv", model.final_conv, cut=False))
    return [*stages, head(model, stages)]
