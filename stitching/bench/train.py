"""Adapter training on cached activations: the source front never runs here, and the frozen target back
contributes input gradients only (its parameters have ``requires_grad=False``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stitching.bench.suite import Recipe


@dataclass
class TrainLog:
    """What happened during training: per-epoch validation accuracy with elapsed seconds, and totals."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def make_optimizer(params, recipe: Recipe, total_steps: int):
    """The recipe's optimizer and a per-step schedule (cosine to zero, or constant)."""
    params = list(params)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return opt, sched


@torch.no_grad()
def predict(
    head: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits of ``head`` over cached ``inputs``, batch by batch (inputs may be memory-mapped)."""
    outs = [
        head(inputs[i : i + batch_size].to(device, torch.float32)).float().cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Micro-averaged top-1 accuracy."""
    return (logits.argmax(1) == labels).float().mean().item()


def train_adapter(
    adapter: nn.Module,
    back: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
) -> TrainLog:
    """Train ``adapter`` so that ``back(adapter(inputs))`` predicts ``labels``.

    ``back`` must be frozen and in eval mode. With ``checkpoint``, state is saved after every epoch and
    training resumes from it (preemption-safe: the file is replaced atomically).
    """
    assert not any(p.requires_grad for p in back.parameters()), "the target back must be frozen"
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(inputs) / recipe.batch_size)
    opt, sched = make_optimizer(adapter.parameters(), recipe, recipe.epochs * steps_per_epoch)
    log = TrainLog()
    start_epoch = _resume(checkpoint, adapter, opt, sched, generator, log)
    labels = labels.to(device)
    started = time.perf_counter() - log.seconds
    for epoch in range(start_epoch, recipe.epochs):
        adapter.train()
        order = torch.randperm(len(inputs), generator=generator)
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            x = inputs[idx].to(device, torch.float32, non_blocking=True)
            loss = F.cross_entropy(back(adapter(x)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            log.steps += 1
        adapter.eval()
        entry = {"epoch": epoch + 1, "loss": loss.item(), "seconds": time.perf_counter() - started}
        if val is not None:
            entry["val_acc"] = accuracy(predict(lambda z: back(adapter(z)), val[0], device=device), val[1])
        log.epochs.append(entry)
        log.seconds = time.perf_counter() - started
        if checkpoint is not None:
            _save(checkpoint, adapter, opt, sched, generator, log, epoch + 1)
    adapter.eval()
    log.seconds = time.perf_counter() - started
    return log


def _save(path, adapter, opt, sched, generator, log, epoch) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "adapter": adapter.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": generator.get_state(),
        "log": log.__dict__,
        "epoch": epoch,
    }
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path, adapter, opt, sched, generator, log) -> int:
    if path is None or not Path(path).exists():
        return 0
    state = torch.load(path, weights_only=True)
    adapter.load_state_dict(state["adapter"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    log.__dict__.update(state["log"])
    log.resumed_from_epoch = state["epoch"]
    return state["epoch"]
