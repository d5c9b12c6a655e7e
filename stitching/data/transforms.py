"""Image preprocessing: from a timm model's data config when there is one, else small-image defaults."""

from __future__ import annotations

from typing import Any

import timm.data
import torch
from torchvision import transforms as T

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def resolve_data_config(
    model_name: str | None = None, data_config: dict[str, Any] | None = None
) -> dict | None:
    """timm's data config (input_size, mean, std, interpolation, crop_pct, crop_mode) for a model or a dict.

    ``data_config`` entries override the model's. Returns None when neither is given. Only the model's
    pretrained config is read: the model itself is not built.
    """
    if model_name is None and not data_config:
        return None
    pretrained_cfg = None
    if model_name is not None:
        cfg = timm.models.get_pretrained_cfg(model_name)
        if cfg is None:
            raise ValueError(f"timm has no data config for model {model_name!r}; pass data_config instead")
        pretrained_cfg = cfg.to_dict()
    args = dict(data_config or {})
    if "input_size" in args and isinstance(args["input_size"], int):
        args["input_size"] = (3, args["input_size"], args["input_size"])
    return timm.data.resolve_data_config(args=args, pretrained_cfg=pretrained_cfg)


def build_transforms(
    config: dict | None,
    augment: bool,
    default_mean: tuple[float, ...],
    default_std: tuple[float, ...],
    default_size: int = 32,
) -> tuple[T.Compose, T.Compose]:
    """(train, eval) transforms for PIL images.

    With a timm data config: ``timm.data.create_transform`` (its training pipeline when ``augment``). Without:
    the usual small-image recipe, random crop with 4-pixel padding and a horizontal flip, then normalisation.
    """
    if config is not None:
        eval_tf = timm.data.create_transform(**config, is_training=False)
        train_tf = timm.data.create_transform(**config, is_training=True) if augment else eval_tf
        return train_tf, eval_tf
    normalize = [T.ToTensor(), T.Normalize(default_mean, default_std)]
    resize = [T.Resize(default_size)] if default_size != 32 else []
    eval_tf = T.Compose([*resize, *normalize])
    if not augment:
        return eval_tf, eval_tf
    train_tf = T.Compose(
        [*resize, T.RandomCrop(default_size, padding=4), T.RandomHorizontalFlip(), *normalize]
    )
    return train_tf, eval_tf


class RandomShift:
    """Translate a (C, H, W) tensor by up to ``max_shift`` pixels each way; uncovered pixels get ``fill``."""

    def __init__(self, max_shift: int, fill: tuple[float, ...] | float = 0.0) -> None:
        self.max_shift = max_shift
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.max_shift
        if s == 0:
            return x
        c, h, w = x.shape
        padded = self.fill.to(x.dtype).expand(c, h + 2 * s, w + 2 * s).clone()
        padded[:, s : s + h, s : s + w] = x
        i, j = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, i : i + h, j : j + w]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_shift={self.max_shift})"
