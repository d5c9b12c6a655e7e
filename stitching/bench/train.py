"""Adapter training on cached activations: the source front never runs here, and the frozen target back
contributes input gradients only (its parameters have ``requires_grad=False``).

``train_adapters`` trains several adapters into one target back in a single pass over the data (as dinov2
trains a grid of linear heads on shared frozen features): their batches are concatenated, so the back runs
once per step for all of them. ``Speed`` holds the switches that change how fast training runs but not what
it computes (precision, memory format, ``torch.compile``, pinned memory); they are process settings, not part
of a cell's config.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stitching.core.optim import Recipe
from stitching.core.speed import Speed


@dataclass
class TrainLog:
    """What happened during training: per-epoch validation accuracy with elapsed seconds, and totals.

    ``initial`` is the validation accuracy before the first step (``seconds`` 0): with a closed-form
    initialisation it can already be the answer.
    """

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    resumed_from_epoch: int = 0
    initial: dict = field(default_factory=dict)
    devices: int = 1
    """How many devices (DDP ranks) trained the adapter."""


def make_optimizer(params, recipe: Recipe, total_steps: int):
    """The recipe's optimizer and per-step schedule."""
    return recipe.build(params, total_steps)


def predict(
    head: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 512,
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
    speed: Speed | None = None,
    fabric=None,
) -> TrainLog:
    """Train ``adapter`` so that ``back(adapter(inputs))`` predicts ``labels``.

    ``back`` must be frozen and in eval mode. With ``checkpoint``, state is saved after every epoch and
    training resumes from it (preemption-safe: the file is replaced atomically). ``fabric``: DDP, as in
    :func:`train_adapters`.
    """
    val_many = None if val is None else ([val[0]], val[1])
    (log,) = train_adapters(
        [adapter], back, [inputs], labels, recipe, seed=seed, val=val_many, device=device,
        checkpoint=checkpoint, speed=speed, fabric=fabric,
    )  # fmt: skip
    return log


def train_adapters(
    adapters: Sequence[nn.Module],
    back: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    recipes: Recipe | Sequence[Recipe],
    *,
    seed: int,
    val: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    speed: Speed | None = None,
    fabric=None,
) -> list[TrainLog]:
    """Train every ``adapters[i]`` on ``inputs[i]`` into the same frozen ``back``, in one pass.

    All adapters see the same shuffled order of samples (from ``seed``), so each ends exactly as if trained
    alone with that seed: the back is in eval mode (samples independent), each adapter's BatchNorm sees
    only its own chunk, and the loss is the sum of the per-adapter mean losses. ``recipes`` may differ per
    adapter in optimizer, learning rate, weight decay and schedule; epochs and batch size are shared.
    ``val`` is (per-adapter validation inputs, labels). Returns one :class:`TrainLog` per adapter.

    With a launched Lightning ``fabric`` (DDP, one process per device) every rank must call this with the
    same arguments: each rank takes its share of every batch, gradients are averaged across ranks (scaled so
    that they equal the single-device gradient of the whole batch), BatchNorm is synchronised on CUDA, and
    rank 0 alone writes the checkpoint. Validation runs on each rank's own device over the whole split.
    A final batch smaller than the number of ranks is skipped.
    """
    assert not any(p.requires_grad for p in back.parameters()), "the target back must be frozen"
    if len(inputs) != len(adapters):
        raise ValueError(f"{len(adapters)} adapters but {len(inputs)} input tensors; give one per adapter")
    recipes = [recipes] * len(adapters) if isinstance(recipes, Recipe) else list(recipes)
    epochs, batch_size = recipes[0].epochs, recipes[0].batch_size
    if any((r.epochs, r.batch_size) != (epochs, batch_size) for r in recipes):
        raise ValueError("adapters trained in one pass must share epochs and batch_size; train them apart")
    speed = speed or Speed()
    num_samples = len(labels)
    steps_per_epoch = math.ceil(num_samples / batch_size)
    optimizers = [
        make_optimizer(a.parameters(), r, epochs * steps_per_epoch)
        for a, r in zip(adapters, recipes, strict=True)
    ]
    generator = torch.Generator().manual_seed(seed)
    logs = [TrainLog() for _ in adapters]
    start_epoch = _resume(checkpoint, adapters, optimizers, generator, logs)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    modules = _distribute(adapters, fabric)
    with torch.no_grad():  # the back's memory format follows the adapter's output
        example = adapters[0].eval()(inputs[0][:2].to(device, torch.float32))
    run_back = speed.prepare_back(back, example)
    fmt = speed.memory_format(example)
    pin = speed.pinned(device)
    labels_dev = labels.to(device)

    def evaluate() -> list[float]:
        for a in adapters:
            a.eval()
        return [
            accuracy(predict(lambda z, a=a: back(a(z)), x, device=device, speed=speed), val[1])
            for a, x in zip(adapters, val[0], strict=True)
        ]

    started = time.perf_counter() - logs[0].seconds
    cpu_started = time.process_time() - logs[0].cpu_seconds  # CPU time: steadier than wall on a shared host
    if val is not None and start_epoch == 0:
        for log, acc in zip(logs, evaluate(), strict=True):
            log.initial = {
                "epoch": 0,
                "val_acc": acc,
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started,
            }
    for epoch in range(start_epoch, epochs):
        for a in adapters:
            a.train()
        order = torch.randperm(num_samples, generator=generator)  # the same on every rank
        loss_sum = torch.zeros(len(adapters), device=device)  # summed on device: no sync per step
        steps = 0
        for i in range(0, num_samples, batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < world:
                continue
            share = idx[rank::world]  # this rank's part of the batch
            batches = _gather(inputs, share, device, pin, fmt)
            with speed.autocast(device):
                outs = [m(x) for m, x in zip(modules, batches, strict=True)]
                z = outs[0] if len(outs) == 1 else torch.cat(outs)
                logits = run_back(z.contiguous(memory_format=fmt)).float()
            y = labels_dev[share.to(device)]
            losses = F.cross_entropy(logits, y.repeat(len(adapters)), reduction="none").view(
                len(adapters), -1
            )
            # per adapter: its own mean loss over the whole batch (this rank's part of it), so gradients
            # match training alone on one device; DDP averages over ranks, hence the factor ``world``
            losses = losses.sum(1) / len(idx)
            for opt, _ in optimizers:
                opt.zero_grad(set_to_none=True)
            (losses.sum() * world).backward()
            for opt, sched in optimizers:
                opt.step()
                sched.step()
            loss_sum += losses.detach()
            steps += 1
        if fabric is not None:
            loss_sum = fabric.all_reduce(loss_sum, reduce_op="sum")
        accs = evaluate() if val is not None else [None] * len(adapters)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        mean_losses = (loss_sum / max(1, steps)).tolist()
        for log, loss, acc in zip(logs, mean_losses, accs, strict=True):
            entry = {"epoch": epoch + 1, "loss": loss, "seconds": elapsed, "cpu_seconds": cpu}
            if acc is not None:
                entry["val_acc"] = acc
            log.epochs.append(entry)
            log.steps += steps
            log.seconds, log.cpu_seconds = elapsed, cpu
            log.devices = world
        if checkpoint is not None and rank == 0:
            _save(checkpoint, adapters, optimizers, generator, logs, epoch + 1)
        if fabric is not None:
            fabric.barrier()  # no rank runs ahead of the checkpoint
    for a, log in zip(adapters, logs, strict=True):
        a.eval()
        log.seconds = time.perf_counter() - started
        log.cpu_seconds = time.process_time() - cpu_started
    return logs


def _distribute(adapters: Sequence[nn.Module], fabric) -> list[nn.Module]:
    """The modules to call in training: the adapters, or with ``fabric`` their DDP wrappers (same parameters).

    On CUDA their BatchNorm layers become SyncBatchNorm so that batch statistics cover the whole batch, as
    on one device; torch has no SyncBatchNorm on CPU, where each rank normalises its own share.
    """
    if fabric is None:
        return list(adapters)
    if fabric.device.type == "cuda":
        for adapter in adapters:
            for name, child in list(adapter.named_children()):
                setattr(adapter, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return [fabric.setup_module(a) for a in adapters]


def _gather(inputs, idx, device, pin, fmt) -> list[torch.Tensor]:
    """This step's batch of every adapter's inputs (feature maps in the back's memory format, so that a
    map-to-map adapter runs in it too); a tensor shared by several adapters is read once."""
    seen: dict[int, torch.Tensor] = {}
    out = []
    for x in inputs:
        if id(x) not in seen:
            batch = x[idx]
            if pin:
                batch = batch.pin_memory()
            batch = batch.to(device, torch.float32, non_blocking=pin)
            seen[id(x)] = batch.contiguous(memory_format=fmt) if batch.ndim == 4 else batch
        out.append(seen[id(x)])
    return out


def _save(path, adapters, optimizers, generator, logs, epoch) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "adapters": [a.state_dict() for a in adapters],
        "optimizers": [opt.state_dict() for opt, _ in optimizers],
        "schedulers": [sched.state_dict() for _, sched in optimizers],
        "generator": generator.get_state(),
        "logs": [log.__dict__ for log in logs],
        "epoch": epoch,
    }
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path, adapters, optimizers, generator, logs) -> int:
    if path is None or not Path(path).exists():
        return 0
    state = torch.load(path, weights_only=True)
    if len(state["adapters"]) != len(adapters):
        raise ValueError(f"checkpoint {path} holds {len(state['adapters'])} adapters, not {len(adapters)}")
    for a, (opt, sched), a_state, o_state, s_state in zip(
        adapters, optimizers, state["adapters"], state["optimizers"], state["schedulers"], strict=True
    ):
        a.load_state_dict(a_state)
        opt.load_state_dict(o_state)
        sched.load_state_dict(s_state)
    generator.set_state(state["generator"])
    for log, saved in zip(logs, state["logs"], strict=True):
        log.__dict__.update(saved)
        log.resumed_from_epoch = state["epoch"]
    return state["epoch"]
