"""Scoring: logits of a head over cached or streamed inputs, and accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from stitching.core.speed import Speed

EVAL_BATCH_SIZE = 512
"""Samples per forward pass when scoring cached activations."""


def predict(
    head: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str | torch.device = "cpu",
    speed: Speed | None = None,
) -> torch.Tensor:
    """Logits of ``head`` over cached ``inputs``, batch by batch (inputs may be memory-mapped)."""
    speed = speed or Speed()
    fmt = speed.memory_format(inputs[:1])
    outs = []
    with torch.inference_mode(), speed.autocast(device):
        for i in range(0, len(inputs), batch_size):
            x = inputs[i : i + batch_size].to(device, torch.float32).contiguous(memory_format=fmt)
            outs.append(head(x).float().cpu())
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Micro-averaged top-1 accuracy (torchmetrics' definition, which ``StitchModule`` logs)."""
    labels = labels.to(logits.device)
    return multiclass_accuracy(logits, labels, logits.shape[1], average="micro").item()
