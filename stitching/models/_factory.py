"""``create_model`` / ``list_models``: timm's registry (which holds our mini_* variants) plus checkpoints."""

from __future__ import annotations

import os

import timm
from torch import nn

from stitching._utils import did_you_mean
from stitching.models._checkpoint import load_checkpoint

# Names timm resolves without the registry (weights and config from a hub or a folder).
_EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


class UnknownModelError(ValueError):
    """The model name is not in timm's registry."""


def list_models(filter: str = "", **kwargs) -> list[str]:
    """Model names, as ``timm.list_models`` (wildcards allowed); includes the ``mini_*`` variants."""
    return timm.list_models(filter, **kwargs)


def check_model_name(name: str) -> None:
    """Raise `UnknownModelError` (with close matches) unless timm can build ``name``."""
    if not name.startswith(_EXTERNAL_PREFIXES) and not timm.is_model(name):
        hint = did_you_mean(name, list_models(), n=5) or "see stitching.list_models('*pattern*')"
        raise UnknownModelError(f"unknown model {name!r}; {hint.strip()}")


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    drop_head: bool = False,
    **kwargs,
) -> nn.Module:
    """Create a timm model (or one of our ``mini_*`` variants) by name.

    Args:
        name: any timm model name (``resnet18``, ``vit_tiny_patch16_224.augreg_in21k``, ``mini_resnet``).
        pretrained: download timm's pretrained weights (needs internet).
        checkpoint_path: load local weights instead: a raw state_dict, a dict holding one under
            ``state_dict``/``model``/``state_dict_ema``, or a Lightning checkpoint (key prefixes stripped).
        drop_head: keep the model's freshly initialised classifier instead of the checkpoint's (for a
            checkpoint trained with another number of classes).
        **kwargs: passed to ``timm.create_model`` (``num_classes``, ``drop_rate``, ...).
    """
    check_model_name(name)
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path, model_name=name, drop_head=drop_head)
    return model
