"""The straightforward stitching harness, kept as the speed baseline for :mod:`stitching.core.training`.

This is how public stitching code trains an adapter: at every step both whole models run on the images (the
source to its last layer although only the cut activation is used, the target's front although its output
is replaced), the models' weights still require gradients (computed, then thrown away), and the adapter
starts from a random initialisation and trains for the full epoch budget. What it computes is the same as
:func:`~stitching.core.training.train_adapter` on cached activations with the same adapter, seed and recipe
(the same batches in the same order); only the cost differs. ``benchmarks/speed_cell.py`` times both.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from stitching.core.evaluate import accuracy
from stitching.core.optim import Recipe
from stitching.core.training import TrainLog
from stitching.cuts import split_model


def train_straightforward(
    source: nn.Module,
    target: nn.Module,
    source_cut: str,
    target_cut: str,
    adapter: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_grads: bool = True,
) -> TrainLog:
    """Train ``adapter`` between ``source`` at ``source_cut`` and ``target`` at ``target_cut`` on images.

    Both models stay in eval mode (frozen BatchNorm statistics, as in our path). With ``weight_grads`` their
    parameters require gradients during training, as in code that only leaves them out of the optimizer;
    ``requires_grad`` is restored afterwards. ``val`` is (images, labels), scored after every epoch.
    """
    src_front, src_back = split_model(source, source_cut)
    tgt_front, tgt_back = split_model(target, target_cut)
    models = (source.eval(), target.eval())
    saved = [[p.requires_grad for p in m.parameters()] for m in models]

    def stitched(x: torch.Tensor) -> torch.Tensor:
        a = src_front(x)
        src_back(a)  # the whole source runs, as with a forward hook on a full model
        tgt_front(x)  # the whole target runs too; the adapter's output replaces its front's
        return tgt_back(adapter(a))

    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    opt, sched = recipe.build(adapter.parameters(), recipe.epochs * steps_per_epoch)
    log = TrainLog()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for m in models:
            m.requires_grad_(weight_grads)
        for epoch in range(recipe.epochs):
            adapter.train()
            order = torch.randperm(len(images), generator=generator)
            for i in range(0, len(order), recipe.batch_size):
                idx = order[i : i + recipe.batch_size]
                loss = F.cross_entropy(stitched(images[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                for m in models:
                    m.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                log.steps += 1
            adapter.eval()
            entry = {"epoch": epoch + 1, "loss": loss.item()}
            if val is not None:
                with torch.no_grad():
                    logits = torch.cat([stitched(x) for x in val[0].split(512)])
                entry["val_acc"] = accuracy(logits, val[1])
            entry.update(seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu_started)
            log.epochs.append(entry)
    finally:
        for m, flags in zip(models, saved, strict=True):
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)
            m.zero_grad(set_to_none=True)
    adapter.eval()
    log.seconds, log.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return log
