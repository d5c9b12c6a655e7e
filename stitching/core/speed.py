"""Speed switches: how adapters are trained and evaluated on a device, not what is computed.

They are process settings (``stitching bench --speed.*``), never part of a cell's config or id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class Speed:
    """How adapters are trained and evaluated on a device: speed switches with sensible defaults."""

    precision: Literal["32", "bf16"] = "32"
    """``bf16``: autocast the adapter and the back to bfloat16 (GPUs with bf16; also works on CPU)."""
    channels_last: bool | None = None
    """Run CNN backs (4-D activations) in channels_last; ``None``: on (1.2-1.4x faster here on CPU)."""
    compile: bool = False
    """``torch.compile`` the target back (pays off on GPU for long runs; compiling costs tens of seconds)."""
    pin_memory: bool | None = None
    """Pinned host batches for asynchronous copies; ``None``: on when the device is CUDA."""
    fuse: bool | None = None
    """Train the stitched adapter and the random-source control in one pass through the back; ``None``: on
    CUDA only (on CPU it measured no faster: 0.97x at resnet layer1, see ``benchmarks/README.md``)."""

    def autocast(self, device: str | torch.device):
        device_type = torch.device(device).type
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def memory_format(self, example: torch.Tensor) -> torch.memory_format:
        on = self.channels_last if self.channels_last is not None else True
        return torch.channels_last if on and example.ndim == 4 else torch.contiguous_format

    def fused(self, device: str | torch.device) -> bool:
        return torch.device(device).type == "cuda" if self.fuse is None else self.fuse

    def pinned(self, device: str | torch.device) -> bool:
        cuda = torch.device(device).type == "cuda"
        return cuda if self.pin_memory is None else self.pin_memory and cuda

    def prepare_back(self, back: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``back`` in the memory format for ``example`` (a target activation), compiled if asked.

        Converting the format rewrites the shared parameters in place: same values, other strides.
        """
        fmt = self.memory_format(example)
        if fmt is torch.channels_last:
            back.to(memory_format=fmt)
        return torch.compile(back) if self.compile else back
