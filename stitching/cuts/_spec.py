"""What an activation at a cut point looks like: the contract between cuts, adapters and the runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Layout = Literal["nchw", "nld"]


@dataclass(frozen=True)
class ActivationSpec:
    """Shape and layout of one model's activation at one cut, excluding the batch dimension.

    ``nchw`` is a feature map ``(N, C, H, W)``. ``nld`` is a token sequence ``(N, L, D)`` whose first
    ``num_prefix_tokens`` tokens are class/distillation/register tokens and whose remaining ``H*W`` tokens
    are a row-major patch grid of shape ``grid``.
    """

    layout: Layout
    channels: int
    grid: tuple[int, int]
    num_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if self.layout not in ("nchw", "nld"):
            raise ValueError(f"layout must be 'nchw' or 'nld', got {self.layout!r}")
        if self.layout == "nchw" and self.num_prefix_tokens:
            raise ValueError("a feature map (nchw) cannot have prefix tokens")

    @property
    def num_positions(self) -> int:
        """Number of spatial positions (patch tokens or pixels), prefix tokens excluded."""
        return self.grid[0] * self.grid[1]

    @property
    def shape(self) -> tuple[int, ...]:
        """The activation shape without the batch dimension."""
        if self.layout == "nchw":
            return (self.channels, *self.grid)
        return (self.num_prefix_tokens + self.num_positions, self.channels)

    @classmethod
    def from_tensor(cls, x: torch.Tensor, num_prefix_tokens: int = 0, grid: tuple[int, int] | None = None):
        """Infer the spec of a batched activation; token grids are assumed square unless ``grid`` is given."""
        if x.ndim == 4:
            return cls("nchw", x.shape[1], (x.shape[2], x.shape[3]))
        if x.ndim == 3:
            n_patch = x.shape[1] - num_prefix_tokens
            if grid is None:
                side = round(n_patch**0.5)
                if side * side != n_patch:
                    raise ValueError(f"{n_patch} patch tokens do not form a square grid; pass grid=(H, W)")
                grid = (side, side)
            return cls("nld", x.shape[2], tuple(grid), num_prefix_tokens)
        raise ValueError(f"expected a 4-d feature map or 3-d token tensor, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class CutPoint:
    """A place where a model can be cut: ``back(front(x)) == model(x)``.

    ``name`` is the module path after which the cut falls (``layer2``, ``layer2.0``, ``stages.1``,
    ``blocks.5``), ``depth`` its relative depth in [0, 1] (0: after the stem, 1: after the last block),
    ``spec`` the activation there at the model's default input size, and ``reduction`` the spatial stride
    relative to the input.
    """

    name: str
    depth: float
    spec: ActivationSpec
    reduction: int

    @property
    def layout(self) -> Layout:
        return self.spec.layout

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def num_prefix_tokens(self) -> int:
        return self.spec.num_prefix_tokens
