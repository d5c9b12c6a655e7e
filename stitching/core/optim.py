"""How an adapter is optimised: the optimiser, its learning-rate schedule, and the whole training recipe.

One implementation for every path: ``stitching fit`` (StitchModule) and ``stitching bench`` (the cached
loop) both build their optimiser and per-step schedule here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch


def schedule_factor(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: linear warmup over ``warmup_steps``, then ``cosine`` (to
    zero at ``total_steps``) or ``constant``. The one schedule of base-model and adapter training."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@dataclass
class OptimizerSpec:
    """The optimiser of an adapter and its learning-rate schedule (stepped once per training batch)."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    """AdamW, or SGD with momentum 0.9."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or L2 penalty (SGD)."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """``cosine``: from ``lr`` to zero over all training steps; ``constant``: ``lr`` throughout."""

    def build(
        self, params: Iterable[torch.nn.Parameter], total_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimiser over ``params`` and its per-step schedule over ``total_steps`` steps."""
        params = list(params)
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule_factor(self.schedule, total_steps))


@dataclass
class Recipe(OptimizerSpec):
    """How each adapter of a benchmark cell is trained: the optimiser, and how long on what batches."""

    epochs: int = 10
    """Passes over the training split; with ``patience``, the most it may take."""
    batch_size: int = 128
    """Training samples per step."""
    patience: int | None = None
    """Stop when the validation loss has not improved for this many epochs and keep the best epoch's
    adapter (``converged: true``); ``None``: train all ``epochs`` and report whether it had converged."""

    @property
    def optimization(self) -> OptimizerSpec:
        """The optimiser part alone (what ``StitchModule`` takes; epochs and batches are the Trainer's)."""
        return OptimizerSpec(self.optimizer, self.lr, self.weight_decay, self.schedule)
