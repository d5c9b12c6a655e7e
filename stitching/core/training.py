"""Adapter training: one training step, the seeded order of training samples, and the cached-activation loop.

The source front never runs here and the frozen target back contributes input gradients only (its
parameters have ``requires_grad=False``). ``StitchModule`` (the Lightning path) calls the same
:func:`stitch_losses` per batch and draws its batches from :class:`EpochOrderSampler`, so the two paths take
the same steps on the same batches.

``train_adapters`` trains several adapters into one target back in a single pass over the data (as dinov2
trains a grid of linear heads on shared frozen features): their batches are concatenated, so the back runs
once per step for all of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from stitching._utils import atomic_path
from stitching.core.evaluate import accuracy, predict
from stitching.core.optim import Recipe
from stitching.core.speed import Speed


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training samples in ``epoch`` (from 0): the ``epoch``-th permutation drawn from a
    generator seeded with ``seed``. Stateless, so a resumed run and every DDP rank draw the same order."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epoch):
        torch.randperm(num_samples, generator=generator)
    return torch.randperm(num_samples, generator=generator)


class EpochOrderSampler(Sampler[int]):
    """A sampler that visits the samples in :func:`epoch_order`; Lightning calls ``set_epoch`` each epoch."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.num_samples, self.seed, self.epoch).tolist())

    def __len__(self) -> int:
        return self.num_samples


def stitch_losses(
    adapters: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    back: Callable[[torch.Tensor], torch.Tensor],
    batches: Sequence[torch.Tensor],
    labels: torch.Tensor,
    denominator: int | None = None,
) -> torch.Tensor:
    """One training step's loss: each adapter's cross-entropy through the frozen ``back``, one value per
    adapter (summed over its batch and divided by ``denominator``, default the batch size: the mean).

    The adapters' outputs are concatenated so that the back runs once for all of them; the back is in eval
    mode, so samples stay independent and each adapter's gradient is as if it were trained alone.
    """
    outs = [adapter(x) for adapter, x in zip(adapters, batches, strict=True)]
    logits = back(outs[0] if len(outs) == 1 else torch.cat(outs)).float()
    losses = F.cross_entropy(logits, labels.repeat(len(outs)), reduction="none").view(len(outs), -1)
    return losses.sum(1) / (denominator or len(labels))


@dataclass
class TrainLog:
    """What happened during training: per-epoch validation accuracy with elapsed seconds, and totals.

    ``initial`` is the validation accuracy before the first step (``seconds`` 0): with a closed-form
    initialisation it can already be the answer.
    """

    epochs: list[dict] = field(default_factory=list)
    """Per epoch: ``epoch``, mean training ``loss``, ``val_acc``, elapsed ``seconds`` and ``cpu_seconds``."""
    steps: int = 0
    """Optimiser steps taken."""
    seconds: float = 0.0
    """Wall time of training."""
    cpu_seconds: float = 0.0
    """CPU time of training (steadier than wall time on a shared host)."""
    resumed_from_epoch: int = 0
    """The epoch a checkpoint resumed from (0: not resumed)."""
    initial: dict = field(default_factory=dict)
    """Validation accuracy before the first step."""
    devices: int = 1
    """How many devices (DDP ranks) trained the adapter."""


@dataclass
class TrainOptions:
    """Where and how :func:`train_adapters` runs (what it trains and on what data are its arguments)."""

    seed: int = 0
    """Seed of the order of training samples."""
    val: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None
    """Per-adapter validation inputs and their labels, scored after every epoch."""
    device: str | torch.device = "cpu"
    """Device of the adapters and the back."""
    checkpoint: str | Path | None = None
    """Saved after every epoch and resumed from (preemption-safe, replaced atomically)."""
    speed: Speed = field(default_factory=Speed)
    """Speed switches (precision, memory format, compile, pinned memory)."""
    fabric: Any = None
    """A launched Lightning Fabric for DDP (one process per device), or None."""


def train_adapter(
    adapter: nn.Module,
    back: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    options: TrainOptions | None = None,
) -> TrainLog:
    """Train ``adapter`` so that ``back(adapter(inputs))`` predicts ``labels`` (see :func:`train_adapters`);
    ``options.val`` is then (validation inputs, labels)."""
    options = options or TrainOptions()
    if options.val is not None:
        options = replace(options, val=([options.val[0]], options.val[1]))
    (log,) = train_adapters([adapter], back, [inputs], labels, recipe, options)
    return log


def train_adapters(
    adapters: Sequence[nn.Module],
    back: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    recipes: Recipe | Sequence[Recipe],
    options: TrainOptions | None = None,
) -> list[TrainLog]:
    """Train every ``adapters[i]`` on ``inputs[i]`` into the same frozen ``back``, in one pass.

    All adapters see the same order of samples (:func:`epoch_order` of ``options.seed``), so each ends
    exactly as if trained alone: each adapter's BatchNorm sees only its own chunk, and the loss is the sum of
    the per-adapter mean losses. ``recipes`` may differ per adapter in optimiser, learning rate, weight decay
    and schedule; epochs and batch size are shared. Returns one :class:`TrainLog` per adapter.

    With a launched Lightning ``options.fabric`` (DDP, one process per device) every rank must call this with
    the same arguments: each rank takes its share of every batch, gradients are averaged across ranks (scaled
    so that they equal the single-device gradient of the whole batch), BatchNorm is synchronised on CUDA, and
    rank 0 alone writes the checkpoint. A final batch smaller than the number of ranks is skipped.
    """
    assert not any(p.requires_grad for p in back.parameters()), "the target back must be frozen"
    if len(inputs) != len(adapters):
        raise ValueError(f"{len(adapters)} adapters but {len(inputs)} input tensors; give one per adapter")
    loop = _Loop.start(list(adapters), back, list(inputs), labels, recipes, options or TrainOptions())
    for epoch in range(loop.start_epoch, loop.epochs):
        loop.run_epoch(epoch)
    return loop.finish()


@dataclass
class _Loop:
    """The state of one :func:`train_adapters` call."""

    adapters: list[nn.Module]
    modules: list[nn.Module]
    back: nn.Module
    inputs: list[torch.Tensor]
    labels: torch.Tensor
    optimizers: list
    options: TrainOptions
    epochs: int
    batch_size: int
    run_back: Callable[[torch.Tensor], torch.Tensor]
    fmt: torch.memory_format
    logs: list[TrainLog]
    start_epoch: int = 0
    started: float = 0.0
    cpu_started: float = 0.0

    @classmethod
    def start(cls, adapters, back, inputs, labels, recipes, options: TrainOptions) -> _Loop:
        recipes = [recipes] * len(adapters) if isinstance(recipes, Recipe) else list(recipes)
        epochs, batch_size = recipes[0].epochs, recipes[0].batch_size
        if any((r.epochs, r.batch_size) != (epochs, batch_size) for r in recipes):
            raise ValueError("adapters trained in one pass must share epochs and batch_size; train apart")
        total = epochs * math.ceil(len(labels) / batch_size)
        optimizers = [r.build(a.parameters(), total) for a, r in zip(adapters, recipes, strict=True)]
        logs = [TrainLog() for _ in adapters]
        start_epoch = _resume(options.checkpoint, adapters, optimizers, logs)
        with torch.no_grad():  # the back's memory format follows the adapter's output
            example = adapters[0].eval()(inputs[0][:2].to(options.device, torch.float32))
        loop = cls(
            adapters, _distribute(adapters, options.fabric), back, inputs, labels.to(options.device),
            optimizers, options, epochs, batch_size, options.speed.prepare_back(back, example),
            options.speed.memory_format(example), logs, start_epoch,
        )  # fmt: skip
        loop.started = time.perf_counter() - logs[0].seconds
        loop.cpu_started = time.process_time() - logs[0].cpu_seconds
        if options.val is not None and start_epoch == 0:
            for log, acc in zip(logs, loop.evaluate(), strict=True):
                log.initial = {"epoch": 0, "val_acc": acc, **loop.elapsed()}
        return loop

    @property
    def rank_world(self) -> tuple[int, int]:
        fabric = self.options.fabric
        return (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)

    def elapsed(self) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - self.started,
            "cpu_seconds": time.process_time() - self.cpu_started,
        }

    def evaluate(self) -> list[float]:
        """Validation accuracy of every adapter (each rank over the whole split, on its own device)."""
        val_inputs, val_labels = self.options.val
        device, speed = self.options.device, self.options.speed
        for a in self.adapters:
            a.eval()
        return [
            accuracy(predict(lambda z, a=a: self.back(a(z)), x, device=device, speed=speed), val_labels)
            for a, x in zip(self.adapters, val_inputs, strict=True)
        ]

    def run_epoch(self, epoch: int) -> None:
        for a in self.adapters:
            a.train()
        rank, world = self.rank_world
        device, speed = self.options.device, self.options.speed
        order = epoch_order(len(self.labels), self.options.seed, epoch)  # the same on every rank
        loss_sum = torch.zeros(len(self.adapters), device=device)  # summed on device: no sync per step
        steps = 0
        pin = speed.pinned(device)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            if len(idx) < world:
                continue
            share = idx[rank::world]  # this rank's part of the batch
            batches = _gather(self.inputs, share, device, pin, self.fmt)
            with speed.autocast(device):
                # per adapter: its own mean loss over the whole batch (this rank's part of it), so gradients
                # match training alone on one device; DDP averages over ranks, hence the factor ``world``
                losses = stitch_losses(
                    self.modules, self._back, batches, self.labels[share.to(device)], len(idx)
                )
            for opt, _ in self.optimizers:
                opt.zero_grad(set_to_none=True)
            (losses.sum() * world).backward()
            for opt, sched in self.optimizers:
                opt.step()
                sched.step()
            loss_sum += losses.detach()
            steps += 1
        self._log_epoch(epoch, loss_sum, steps)

    def _back(self, z: torch.Tensor) -> torch.Tensor:
        return self.run_back(z.contiguous(memory_format=self.fmt))

    def _log_epoch(self, epoch: int, loss_sum: torch.Tensor, steps: int) -> None:
        fabric = self.options.fabric
        if fabric is not None:
            loss_sum = fabric.all_reduce(loss_sum, reduce_op="sum")
        accs = self.evaluate() if self.options.val is not None else [None] * len(self.adapters)
        elapsed = self.elapsed()
        for log, loss, acc in zip(self.logs, (loss_sum / max(1, steps)).tolist(), accs, strict=True):
            entry = {"epoch": epoch + 1, "loss": loss, **elapsed}
            if acc is not None:
                entry["val_acc"] = acc
            log.epochs.append(entry)
            log.steps += steps
            log.seconds, log.cpu_seconds = elapsed["seconds"], elapsed["cpu_seconds"]
            log.devices = self.rank_world[1]
        if self.options.checkpoint is not None and self.rank_world[0] == 0:
            _save(self.options.checkpoint, self.adapters, self.optimizers, self.logs, epoch + 1)
        if fabric is not None:
            fabric.barrier()  # no rank runs ahead of the checkpoint

    def finish(self) -> list[TrainLog]:
        elapsed = self.elapsed()
        for a, log in zip(self.adapters, self.logs, strict=True):
            a.eval()
            log.seconds, log.cpu_seconds = elapsed["seconds"], elapsed["cpu_seconds"]
        return self.logs


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


def _save(path, adapters, optimizers, logs, epoch) -> None:
    state = {
        "adapters": [a.state_dict() for a in adapters],
        "optimizers": [opt.state_dict() for opt, _ in optimizers],
        "schedulers": [sched.state_dict() for _, sched in optimizers],
        "logs": [log.__dict__ for log in logs],
        "epoch": epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path, adapters, optimizers, logs) -> int:
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
    for log, saved in zip(logs, state["logs"], strict=True):
        log.__dict__.update(saved)
        log.resumed_from_epoch = state["epoch"]
    return state["epoch"]
