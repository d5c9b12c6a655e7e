"""``list_cuts`` and ``split_model``: the public face of the per-family splitters and the fx fallback."""

from __future__ import annotations

import torch
from torch import nn

from stitching._utils import did_you_mean
from stitching.cuts._registry import Stage, find_splitter, list_families
from stitching.cuts._spec import ActivationSpec, CutPoint
from stitching.cuts._stages import Segment
from stitching.cuts.fx import FxTraceError, fx_stages


class UnsupportedModelError(TypeError):
    """No splitter matches the model and torch.fx cannot trace it."""


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The model's default ``(C, H, W)``: its own patch embedding's image size where it has one (a ViT
    built with ``img_size=32`` or ``(32, 48)``, whose ``pretrained_cfg`` still says 224), else timm's
    ``pretrained_cfg["input_size"]``."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    own = _own_input_size(model, cfg)
    if own is not None:
        return own
    if "input_size" not in cfg:
        raise ValueError(
            f"{type(model).__name__} has no pretrained_cfg['input_size']: pass input_size=(C, H, W)"
        )
    return tuple(cfg["input_size"])


def _own_input_size(model: nn.Module, cfg: dict) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the image size a model's patch embedding was built for, or None."""
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    channels = getattr(getattr(patch_embed, "proj", None), "in_channels", None)
    return (channels or cfg.get("input_size", (3,))[0], height, width)


def model_stages(model: nn.Module, input_size: tuple[int, ...] | None = None) -> list[Stage]:
    """The model as an ordered list of stages (family splitter, else torch.fx)."""
    splitter = find_splitter(model)
    if splitter is not None:
        return splitter.stages(model)
    try:
        return fx_stages(model, input_size or default_input_size(model))
    except FxTraceError as e:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not supported: no splitter matches it and torch.fx cannot cut it "
            f"({e}). Supported families: {', '.join(list_families())}; "
            "other models need an fx-traceable forward."
        ) from e


def _token_grid(model: nn.Module, hw: tuple[int, int]) -> tuple[int, int] | None:
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
        return tuple(patch_embed.dynamic_feat_size(hw))
    return None


def _cut_depths(stages: list[Stage]) -> list[tuple[int, float]]:
    """``(stage index, depth)`` of every cut; the first cut (after the stem) is 0, the last 1, evenly spaced
    in between (every cut after the stem ends one block)."""
    idx = [i for i, s in enumerate(stages) if s.cut]
    return [(i, k / max(1, len(idx) - 1)) for k, i in enumerate(idx)]


def list_cuts(model: nn.Module, input_size: tuple[int, ...] | None = None) -> list[CutPoint]:
    """The model's cut points in forward order, with activation specs measured by a forward pass.

    ``input_size`` is ``(C, H, W)``; default: the model's ``pretrained_cfg["input_size"]``. Depth is the
    fraction of blocks (cut points after the stem) run before the cut: 0 after the stem, 1 after the last.
    """
    input_size = tuple(input_size or default_input_size(model))
    stages = model_stages(model, input_size)
    depths = dict(_cut_depths(stages))
    hw = (input_size[1], input_size[2])
    prefix = getattr(model, "num_prefix_tokens", 0)
    was_training = model.training
    model.eval()
    cuts, x = [], torch.zeros(1, *input_size)
    with torch.no_grad():
        for i, stage in enumerate(stages):
            x = stage.module(x)
            if not stage.cut:
                continue
            if x.ndim == 3:
                spec = ActivationSpec.from_tensor(x, prefix, _token_grid(model, hw))
            else:
                spec = ActivationSpec.from_tensor(x)
            cuts.append(CutPoint(stage.name, depths[i], spec, reduction=max(1, round(hw[0] / spec.grid[0]))))
    model.train(was_training)
    return cuts


def _resolve(stages: list[Stage], cut: str | float | CutPoint) -> int:
    """Index of the stage after which ``cut`` falls."""
    depths = _cut_depths(stages)
    return depths[_pick([stages[i].name for i, _ in depths], [d for _, d in depths], cut)][0]


def _pick(names: list[str], depths: list[float], cut: str | float | CutPoint) -> int:
    """Index into ``names`` of the cut that ``cut`` names (by name, or the nearest depth; ties: earlier)."""
    if isinstance(cut, CutPoint):
        cut = cut.name
    if isinstance(cut, str):
        if cut in names:
            return names.index(cut)
        depth = _as_number(cut)  # ``--model.init_args.source_cut=0.5`` arrives as the string "0.5"
        if depth is None:
            hint = did_you_mean(cut, names, n=5, cutoff=0.5)
            valid = ", ".join(names)
            raise ValueError(f"unknown cut {cut!r}; {hint}valid cuts: {valid}, or a depth in [0, 1]")
        cut = depth
    if isinstance(cut, (int, float)) and not isinstance(cut, bool) and 0.0 <= cut <= 1.0:
        return min(range(len(depths)), key=lambda i: abs(depths[i] - cut))
    raise ValueError(f"cut must be a cut name, a depth in [0, 1] or a CutPoint, got {cut!r}; cuts: {names}")


def get_cut(
    model: nn.Module, cut: str | float | CutPoint, input_size: tuple[int, ...] | None = None
) -> CutPoint:
    """The ``CutPoint`` that ``cut`` (a name, a relative depth: the nearest cut, or a CutPoint) refers to."""
    cuts = list_cuts(model, input_size)
    return cuts[_pick([c.name for c in cuts], [c.depth for c in cuts], cut)]


def split_model(
    model: nn.Module, cut: str | float | CutPoint, input_size: tuple[int, ...] | None = None
) -> tuple[Segment, Segment]:
    """Split ``model`` into ``(front, back)`` at ``cut`` so that ``back(front(x)) == model(x)`` in eval mode.

    ``cut`` is a cut name from ``list_cuts``, a relative depth in [0, 1] (the nearest cut) or a ``CutPoint``.
    Both halves share the model's modules and parameters (no copies). ``input_size`` is only read by the
    torch.fx fallback (to find cuts whose activation is a feature map or token sequence).
    """
    stages = model_stages(model, input_size)
    k = _resolve(stages, cut)
    return Segment(stages[: k + 1]), Segment(stages[k + 1 :])


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
