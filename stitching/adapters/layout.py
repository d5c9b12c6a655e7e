"""Layout conversion between feature maps (N, C, H, W) and token sequences (N, L, D).

Tokens are ``num_prefix_tokens`` prefix tokens followed by a row-major patch grid: token ``P + h * W + w``
is grid cell ``(h, w)``. Feature maps flatten to tokens in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stitching.cuts._spec import ActivationSpec


def check_spec(spec: ActivationSpec, role: str) -> None:
    """Raise a clear error when ``spec`` cannot describe an adapter end (no usable grid)."""
    if not isinstance(spec, ActivationSpec):
        raise TypeError(f"{role} must be an ActivationSpec, got {type(spec).__name__}")
    grid = spec.grid
    if grid is None or len(grid) != 2 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(
            f"{role} spec {spec} needs a patch grid of two positive ints; for tokens pass grid=(H, W) "
            "(e.g. ActivationSpec.from_tensor(x, num_prefix_tokens, grid=(H, W)))"
        )
    if spec.channels < 1 or spec.num_prefix_tokens < 0:
        raise ValueError(f"{role} spec {spec} needs channels >= 1 and num_prefix_tokens >= 0")


def check_input(x: torch.Tensor, spec: ActivationSpec, role: str) -> None:
    """Raise a ValueError naming both shapes when ``x`` is not a batch of ``spec`` activations."""
    if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != spec.shape:
        raise ValueError(
            f"{role} activation has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, spec.shape))}) "
            f"for {spec}"
        )


def to_feature_map(x: torch.Tensor, spec: ActivationSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split ``x`` into its patch grid as a feature map (N, C, H, W) and its prefix tokens (N, P, C)/None."""
    if spec.layout == "nchw":
        return x, None
    p = spec.num_prefix_tokens
    fmap = x[:, p:].transpose(1, 2).reshape(x.shape[0], spec.channels, *spec.grid)
    return fmap, (x[:, :p] if p else None)


def resample(fmap: torch.Tensor, grid: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a feature map to ``grid``; a no-op when the size already matches.

    ``bilinear`` is antialiased: bilinear when upsampling, a triangle low-pass filter when downsampling.
    ``area`` is adaptive average pooling (an exact box average for integer factors). ``nearest`` uses
    ``nearest-exact`` (pixel centres aligned).
    """
    grid = tuple(grid)
    if tuple(fmap.shape[-2:]) == grid:
        return fmap
    if mode == "bilinear":
        # antialiasing only changes a downsampling; upsampling without it is the same map, 2-4x faster
        downsampling = grid[0] < fmap.shape[-2] or grid[1] < fmap.shape[-1]
        return F.interpolate(fmap, size=grid, mode="bilinear", align_corners=False, antialias=downsampling)
    if mode == "area":
        return F.adaptive_avg_pool2d(fmap, grid)
    if mode == "nearest":
        return F.interpolate(fmap, size=grid, mode="nearest-exact")
    raise ValueError(f"unknown resample mode {mode!r}")
