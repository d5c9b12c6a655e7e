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
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

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


MIN_DELTA = 1e-3
"""The smallest decrease of the validation cross-entropy (nats) that counts as an improvement."""

Objective = Literal["task", "match", "task+match"]
"""What an adapter is trained for: ``task``, the target's task loss through its frozen back (cross-entropy);
``match``, the mean squared error to the target's own activation at its cut, divided by that activation's
variance (direct matching, which keeps the stitched activation in distribution: arXiv 2412.11299);
``task+match``, their sum."""
OBJECTIVES: tuple[str, ...] = get_args(Objective)


MATCH_SCALE_ROWS = 1024
"""Training rows from which the variance that normalises the ``match`` loss is estimated."""


@dataclass
class MatchTargets:
    """The target's own activations at its cut (training split), for the ``match`` objectives."""

    activations: torch.Tensor
    """(N, ...) target activations, in the order of the training inputs."""
    scale: float = 1.0
    """The squared error is divided by this (the activations' variance), so that losses are scale-free."""

    @classmethod
    def of(cls, activations: torch.Tensor) -> MatchTargets:
        """With ``scale`` estimated from the first :data:`MATCH_SCALE_ROWS` rows."""
        variance = activations[:MATCH_SCALE_ROWS].float().var().item()
        return cls(activations, max(variance, 1e-12))


def stitch_losses(
    adapters: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    back: Callable[[torch.Tensor], torch.Tensor],
    batches: Sequence[torch.Tensor],
    labels: torch.Tensor,
    denominator: int | None = None,
    objective: Objective = "task",
    targets: tuple[torch.Tensor, float] | None = None,
) -> torch.Tensor:
    """One training step's loss, one value per adapter, summed over its batch and divided by
    ``denominator`` (default the batch size: the mean).

    ``task``: cross-entropy through the frozen ``back``; the adapters' outputs are concatenated so that the
    back runs once for all of them (it is in eval mode, so samples stay independent and each adapter's
    gradient is as if it were trained alone). ``match``/``task+match`` add the squared error to ``targets``
    = (the target's activations for this batch, their variance), averaged over elements.
    """
    outs = [adapter(x) for adapter, x in zip(adapters, batches, strict=True)]
    losses = torch.zeros(len(outs), device=labels.device)
    if objective != "match":
        logits = back(outs[0] if len(outs) == 1 else torch.cat(outs)).float()
        ce = F.cross_entropy(logits, labels.repeat(len(outs)), reduction="none").view(len(outs), -1)
        losses = losses + ce.sum(1)
    if objective != "task":
        if targets is None:
            raise ValueError(f"objective {objective!r} needs the target's activations (targets=)")
        wanted, scale = targets
        errors = [((out.float() - wanted.float()) ** 2).flatten(1).mean(1).sum() / scale for out in outs]
        losses = losses + torch.stack(errors)
    return losses / (denominator or len(labels))


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
    best_epoch: int = 0
    """The epoch with the lowest validation loss (0: the initialisation)."""
    converged: bool | None = None
    """True when the validation loss stopped improving for ``patience`` epochs before the last epoch (or,
    without patience, did not improve over the last quarter of the epochs); None without validation."""
    diverged_epoch: int | None = None
    """The first epoch whose training or validation loss was not finite (NaN or inf): the adapter diverged,
    its weights mean nothing and it was trained no further; None when training stayed finite."""


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
    objective: Objective = "task"
    """What the adapters are trained for (:data:`Objective`)."""
    targets: MatchTargets | None = None
    """The target's activations at its cut, for the ``match`` objectives."""


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
    and schedule; epochs, batch size and patience are shared. Returns one :class:`TrainLog` per adapter.

    Divergence: an adapter whose epoch loss (training or validation) is not finite is marked
    (``TrainLog.diverged_epoch``) and takes no further steps; training stops once every adapter has diverged.

    Convergence: after every epoch each adapter's validation cross-entropy is compared with its best so far
    (an improvement must exceed :data:`MIN_DELTA`). With ``recipe.patience`` training stops once no adapter
    has improved for that many epochs, and each adapter is restored to its best epoch. ``TrainLog.converged``
    says whether the loss had stopped improving (see :class:`TrainLog`).

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
        if loop.patience_ran_out(epoch) or loop.all_diverged:
            break
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
    patience: int | None = None
    best: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, adapters, back, inputs, labels, recipes, options: TrainOptions) -> _Loop:
        recipes = [recipes] * len(adapters) if isinstance(recipes, Recipe) else list(recipes)
        epochs, batch_size = recipes[0].epochs, recipes[0].batch_size
        if len({(r.epochs, r.batch_size, r.patience) for r in recipes}) > 1:
            raise ValueError("adapters trained in one pass must share epochs, batch_size and patience")
        total = epochs * math.ceil(len(labels) / batch_size)
        optimizers = [r.build(a.parameters(), total) for a, r in zip(adapters, recipes, strict=True)]
        logs = [TrainLog() for _ in adapters]
        start_epoch, best = _resume(options.checkpoint, adapters, optimizers, logs)
        with torch.no_grad():  # the back's memory format follows the adapter's output
            example = adapters[0].eval()(inputs[0][:2].to(options.device, torch.float32))
        loop = cls(
            adapters, _distribute(adapters, options.fabric), back, inputs, labels.to(options.device),
            optimizers, options, epochs, batch_size, options.speed.prepare_back(back, example),
            options.speed.memory_format(example), logs, start_epoch, patience=recipes[0].patience, best=best,
        )  # fmt: skip
        loop.started = time.perf_counter() - logs[0].seconds
        loop.cpu_started = time.process_time() - logs[0].cpu_seconds
        if options.val is not None and start_epoch == 0:
            for i, (acc, loss) in enumerate(loop.evaluate()):
                logs[i].initial = {"epoch": 0, "val_acc": acc, "val_loss": loss, **loop.elapsed()}
                loop.best.append({"epoch": 0, "loss": loss, "state": _copy_state(adapters[i])})
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

    def evaluate(self) -> list[tuple[float, float]]:
        """Validation accuracy and cross-entropy of every adapter (each rank over the whole split)."""
        val_inputs, val_labels = self.options.val
        device, speed = self.options.device, self.options.speed
        scores = []
        for a, x in zip(self.adapters, val_inputs, strict=True):
            a.eval()
            logits = predict(lambda z, a=a: self.back(a(z)), x, device=device, speed=speed)
            loss = F.cross_entropy(logits, val_labels.to(logits.device)).item()
            scores.append((accuracy(logits, val_labels), loss))
        return scores

    @property
    def all_diverged(self) -> bool:
        return all(log.diverged_epoch is not None for log in self.logs)

    def patience_ran_out(self, epoch: int) -> bool:
        """True when, with patience, no adapter has improved for ``patience`` epochs before ``epoch``."""
        if self.patience is None or not self.best:
            return False
        return all(epoch - best["epoch"] >= self.patience for best in self.best)

    def _track_best(self, epoch: int, losses: list[float]) -> None:
        for i, loss in enumerate(losses):
            if loss < self.best[i]["loss"] - MIN_DELTA:
                self.best[i] = {"epoch": epoch, "loss": loss, "state": _copy_state(self.adapters[i])}

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
            targets = self._match_targets(share)
            with speed.autocast(device):
                # per adapter: its own mean loss over the whole batch (this rank's part of it), so gradients
                # match training alone on one device; DDP averages over ranks, hence the factor ``world``
                losses = stitch_losses(
                    self.modules, self._back, batches, self.labels[share.to(device)], len(idx),
                    self.options.objective, targets,
                )  # fmt: skip
            for opt, _ in self.optimizers:
                opt.zero_grad(set_to_none=True)
            (losses.sum() * world).backward()
            for (opt, sched), log in zip(self.optimizers, self.logs, strict=True):
                if log.diverged_epoch is None:
                    opt.step()
                    sched.step()
            loss_sum += losses.detach()
            steps += 1
        self._log_epoch(epoch, loss_sum, steps)

    def _match_targets(self, share: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        targets = self.options.targets
        if self.options.objective == "task" or targets is None:
            return None
        (batch,) = _gather([targets.activations], share, self.options.device, False, self.fmt)
        return batch, targets.scale

    def _back(self, z: torch.Tensor) -> torch.Tensor:
        return self.run_back(z.contiguous(memory_format=self.fmt))

    def _log_epoch(self, epoch: int, loss_sum: torch.Tensor, steps: int) -> None:
        fabric = self.options.fabric
        if fabric is not None:
            loss_sum = fabric.all_reduce(loss_sum, reduce_op="sum")
        scores = self.evaluate() if self.options.val is not None else [None] * len(self.adapters)
        if self.best:
            self._track_best(epoch + 1, [score[1] for score in scores])
        elapsed = self.elapsed()
        for log, loss, score in zip(self.logs, (loss_sum / max(1, steps)).tolist(), scores, strict=True):
            entry = {"epoch": epoch + 1, "loss": loss, **elapsed}
            if score is not None:
                entry["val_acc"], entry["val_loss"] = score
            finite = math.isfinite(loss) and (score is None or math.isfinite(score[1]))
            if not finite and log.diverged_epoch is None:
                log.diverged_epoch = epoch + 1
            log.epochs.append(entry)
            log.steps += steps
            log.seconds, log.cpu_seconds = elapsed["seconds"], elapsed["cpu_seconds"]
            log.devices = self.rank_world[1]
        if self.options.checkpoint is not None and self.rank_world[0] == 0:
            _save(self.options.checkpoint, self, epoch + 1)
        if fabric is not None:
            fabric.barrier()  # no rank runs ahead of the checkpoint

    def finish(self) -> list[TrainLog]:
        """Mark convergence, restore the best epochs (with patience), put the adapters in eval mode."""
        elapsed = self.elapsed()
        ran = len(self.logs[0].epochs)
        for i, (a, log) in enumerate(zip(self.adapters, self.logs, strict=True)):
            if self.best:
                best = self.best[i]
                log.best_epoch = best["epoch"]
                window = self.patience if self.patience is not None else max(1, self.epochs // 4)
                log.converged = ran - best["epoch"] >= window and log.diverged_epoch is None
                if self.patience is not None:
                    a.load_state_dict(best["state"])
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


def _copy_state(adapter: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.state_dict().items()}


def _save(path, loop: _Loop, epoch: int) -> None:
    state = {
        "adapters": [a.state_dict() for a in loop.adapters],
        "optimizers": [opt.state_dict() for opt, _ in loop.optimizers],
        "schedulers": [sched.state_dict() for _, sched in loop.optimizers],
        "logs": [log.__dict__ for log in loop.logs],
        "best": loop.best,
        "epoch": epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


_CHECKPOINT_KEYS = {"adapters", "optimizers", "schedulers", "logs", "epoch"}


def _resume(path, adapters, optimizers, logs) -> tuple[int, list[dict]]:
    """Load a checkpoint into the adapters, optimisers and logs; returns (epochs done, best epochs)."""
    if path is None or not Path(path).exists():
        return 0, []
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= state.keys():
            raise ValueError(f"not an adapter checkpoint (keys {_CHECKPOINT_KEYS} expected)")
    except Exception as err:  # truncated, foreign or garbage: keep it aside, train from the start
        aside = Path(path).with_name(Path(path).name + ".corrupt")
        os.replace(path, aside)
        warnings.warn(
            f"resume checkpoint {str(path)!r} is corrupt or not a checkpoint ({type(err).__name__}); "
            f"moved to {aside.name!r}, training from the start",
            stacklevel=2,
        )
        return 0, []
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
    return state["epoch"], state.get("best", [])
