"""Vision Transformer family (timm ``VisionTransformer`` and DeiT's distilled subclass).

Class, distillation and register tokens are all prefix tokens (``model.num_prefix_tokens``); ``_pos_embed``
adds them, so every cut from the stem on is a token sequence (layout ``nld``).
"""

from __future__ import annotations

from timm.models import VisionTransformer
from torch import nn

from stitching.cuts._registry import Stage, register_splitter
from stitching.cuts._stages import Call, head, overrides

# Parameters and modules read by `_pos_embed` (None where a variant lacks them).
_EMBED_OWNED = ("cls_token", "reg_token", "dist_token", "pos_embed", "pos_drop")


@register_splitter(
    "vit",
    matches=lambda m: (
        isinstance(m, VisionTransformer)
        and not overrides(m, VisionTransformer, "forward_features", "forward")
    ),
)
def vit_stages(model: nn.Module) -> list[Stage]:
    """``patch_embed -> _pos_embed -> patch_drop -> norm_pre`` (the stem cut: ``norm_pre``), then
    ``blocks.0 .. blocks.N-1``, ``norm`` and ``forward_head``."""
    owned = {n: getattr(model, n) for n in _EMBED_OWNED if getattr(model, n, None) is not None}
    stages = [
        Stage("patch_embed", model.patch_embed, cut=False),
        Stage("_pos_embed", Call(model._pos_embed, owned), cut=False),
        Stage("patch_drop", model.patch_drop, cut=False),
        Stage("norm_pre", model.norm_pre),
    ]
    stages += [Stage(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
    stages.append(Stage("norm", model.norm, cut=False))
    return [*stages, head(model, stages)]
