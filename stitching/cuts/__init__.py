"""Cut points: where a model can be split into a front and a back with ``back(front(x)) == model(x)``.

Importing this package registers the family splitters (ResNet, ViT/DeiT, ConvNeXt, EfficientNet/MobileNetV3,
RegNet); other models go through the torch.fx fallback in ``stitching.cuts.fx``.
"""

from stitching.cuts import convnext, efficientnet, regnet, resnet, vit  # noqa: F401  (registers splitters)
from stitching.cuts._registry import Stage, list_families, register_splitter
from stitching.cuts._spec import ActivationSpec, CutPoint, Layout
from stitching.cuts._split import UnsupportedModelError, get_cut, list_cuts, model_stages, split_model
from stitching.cuts._stages import Call, Segment

__all__ = [
    "ActivationSpec",
    "Call",
    "CutPoint",
    "Layout",
    "Segment",
    "Stage",
    "UnsupportedModelError",
    "get_cut",
    "list_cuts",
    "list_families",
    "model_stages",
    "register_splitter",
    "split_model",
]
