"""One benchmark cell: stitch a source front into a target back at one pair of cuts and score it.

``run_cell(cell, store_dir)`` is the only function executors call. It skips a cell whose record exists,
checkpoints adapter training so a preempted job resumes, and writes one self-describing record atomically.
The cell runs as named steps, in order: data and models, baselines, least squares, training, controls,
alignment; the adapter, its initialisation, training and scoring come from :mod:`stitching.core`, the same
code ``stitching fit`` runs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stitching.bench.cell_config import Cell, CellConfig
from stitching.bench.context import CellContext
from stitching.bench.record import make_record
from stitching.bench.runtime import Runtime
from stitching.bench.store import ResultStore
from stitching.core.activations import ACTIVATION_BATCH_SIZE, activation_spec, paired_batches
from stitching.core.adapters import build_adapter
from stitching.core.evaluate import accuracy, predict
from stitching.core.training import TrainOptions, train_adapters
from stitching.cuts import ActivationSpec, get_cut, split_model
from stitching.nn import num_trainable_parameters

SPLITS = ("train", "val", "test")
_CONTEXTS: dict[str, CellContext] = {}


def default_context(runtime: Runtime | None = None) -> CellContext:
    """The process-wide context for ``runtime``, so consecutive cells in one process share models and
    activations."""
    runtime = runtime or Runtime()
    key = repr(runtime)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = CellContext(runtime=runtime)
    return _CONTEXTS[key]


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def run_cell(
    cell: Cell,
    store_dir: str | Path,
    context: CellContext | None = None,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Run one cell (or return its existing record) and store its record under ``store_dir``.

    ``runtime`` chooses the devices (see :mod:`stitching.bench.runtime`); with DDP every rank calls this
    for the same cells in the same order, and rank 0 writes the record.
    """
    store = ResultStore(store_dir)
    ctx = context or default_context(runtime)
    done = store.has(cell.cell_id)
    if ctx.fabric is not None:  # every rank must take the same branch: rank 0 decides
        done = ctx.fabric.broadcast(done)
    if done:
        return store.read(cell.cell_id)
    work_dir = Path(store_dir) / "work" / cell.cell_id
    run = _CellRun(cell.config, ctx, work_dir)
    run.score()
    record = make_record(
        {"cell_id": cell.cell_id, "suite": asdict(cell.suite), "config": cell.config.to_dict()},
        run.metrics,
        run.timer.seconds,
        **run.extra,
    )
    ctx.barrier()  # every rank is past the cell's last collective before rank 0 removes its checkpoints
    if not ctx.is_global_zero:
        return record
    store.write(record)
    _remove_checkpoints(work_dir)
    return record


def _remove_checkpoints(work_dir: Path) -> None:
    """Checkpoints only matter until the record exists."""
    for leftover in work_dir.glob("*.pt"):
        leftover.unlink()
    for leftover_dir in (work_dir, work_dir.parent):
        if leftover_dir.is_dir() and not any(leftover_dir.iterdir()):
            leftover_dir.rmdir()


@dataclass
class _Side:
    """One model of the cell, cut: its back, and its front's activations per split."""

    back: nn.Module
    acts: dict[str, torch.Tensor]
    spec: ActivationSpec
    num_prefix_tokens: int
    info: dict = field(default_factory=dict)


class _CellRun:
    """The steps of one cell; each fills ``metrics`` (and ``extra`` for the record)."""

    def __init__(self, config: CellConfig, ctx: CellContext, work_dir: Path) -> None:
        self.config, self.ctx, self.work_dir = config, ctx, work_dir
        self.timer = _Timer()
        self.metrics: dict[str, float] = {}
        self.extra: dict[str, Any] = {}

    def score(self) -> None:
        self.load()
        self.baselines()
        self.least_squares()
        self.train()
        self.alignment()

    def logits(self, head, inputs: torch.Tensor) -> torch.Tensor:
        return predict(head, inputs, device=self.ctx.device, speed=self.ctx.speed)

    def stitched_logits(self, adapter: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        back = self.target.back
        return self.logits(lambda z: back(adapter(z)), inputs)

    def options(self, val_inputs: list[torch.Tensor], checkpoint: str) -> TrainOptions:
        return TrainOptions(
            seed=self.config.stitch_seed,
            val=(val_inputs, self.labels["val"]),
            device=self.ctx.device,
            checkpoint=self.work_dir / checkpoint,
            speed=self.ctx.speed,
            fabric=self.ctx.fabric,
        )

    def load(self) -> None:
        """Data and models: labels of every split, both models cut, their front activations (cached)."""
        config, ctx = self.config, self.ctx
        with self.timer("data"), ctx.rank_zero_first():  # with DDP: rank 0 downloads, the others then read
            self.num_classes = ctx.datamodule(config.dataset).num_classes
            self.labels = {split: ctx.labels(config.dataset, split) for split in SPLITS}
        with self.timer("base_models"), ctx.rank_zero_first():  # rank 0 trains a missing base model, once
            source, source_info = ctx.model(config.source, self.num_classes)
            target, target_info = ctx.model(config.target, self.num_classes)
        with self.timer("activations"):
            self.source = self._side(source, config.source_cut, "source", SPLITS, source_info)
            self.target = self._side(target, config.target_cut, "target", ("train", "test"), target_info)

    def _side(self, model, cut_name, role, splits, info) -> _Side:
        cut = get_cut(model, cut_name)
        front, back = split_model(model, cut)
        identity = {"model": self.config.to_dict()[role], "cut": cut.name}
        acts = {s: self.ctx.front_activations(identity, front, self.config.dataset, s) for s in splits}
        self.cut_of = getattr(self, "cut_of", {})
        self.cut_of[role] = cut
        return _Side(back, acts, activation_spec(acts["test"], cut), cut.spec.num_prefix_tokens, info)

    def baselines(self) -> None:
        """The target and the source alone on the test split."""
        test = self.labels["test"]
        with self.timer("baselines"):
            target_logits = self.logits(self.target.back, self.target.acts["test"])
            self.metrics["target_acc"] = accuracy(target_logits, test)
            source_logits = self.logits(self.source.back, self.source.acts["test"])
            self.metrics["source_acc"] = accuracy(source_logits, test)
            self.target_pred = target_logits.argmax(1)

    def build(self, init: str, train_inputs: torch.Tensor) -> nn.Module:
        """The cell's adapter from ``train_inputs`` (the source's, or a control's) to the target."""
        config = self.config
        data = paired_batches(train_inputs, self.target.acts["train"], ACTIVATION_BATCH_SIZE)
        adapter = build_adapter(
            self.source.spec, self.target.spec, config.adapter_config, init, config.stitch_seed, data
        )
        return adapter.to(self.ctx.device)

    def least_squares(self) -> None:
        """The training-free least-squares stitch, and the adapter training starts from."""
        test_inputs = self.source.acts["test"]
        with self.timer("lstsq"):
            lstsq = self.build("lstsq", self.source.acts["train"]).eval()
            lstsq_logits = self.stitched_logits(lstsq, test_inputs)
            self.metrics["lstsq_acc"] = accuracy(lstsq_logits, self.labels["test"])
        with self.timer("adapter_init"):
            init = self.config.init
            self.adapter = lstsq if init == "lstsq" else self.build(init, self.source.acts["train"])
            init_logits = self.stitched_logits(self.adapter.eval(), test_inputs)
            self.metrics["init_acc"] = accuracy(init_logits, self.labels["test"])

    def train(self) -> None:
        """Adapter training (with the random-source control in the same pass where ``Speed.fuse`` asks)."""
        config, ctx, m = self.config, self.ctx, self.metrics
        control = "random_source" in config.controls
        if control:
            with self.timer("control"):
                self._prepare_control()
        fused = control and ctx.speed.fused(ctx.device)
        adapters, inputs, val_inputs = [self.adapter], [self.source.acts["train"]], [self.source.acts["val"]]
        if fused:
            adapters += [self.control_adapter]
            inputs += [self.control_acts["train"]]
            val_inputs += [self.control_acts["val"]]
        checkpoint = "adapters.pt" if fused else "adapter.pt"
        with self.timer("train"):
            log, *_ = train_adapters(
                adapters, self.target.back, inputs, self.labels["train"], config.recipe,
                self.options(val_inputs, checkpoint),
            )  # fmt: skip
        with self.timer("eval"):
            logits = self.stitched_logits(self.adapter, self.source.acts["test"])
            m["stitched_acc"] = accuracy(logits, self.labels["test"])
            m["agreement"] = (logits.argmax(1) == self.target_pred).float().mean().item()
            m["stitched_val_acc"] = log.epochs[-1]["val_acc"] if log.epochs else float("nan")
            m["penalty"] = m["target_acc"] - m["stitched_acc"]
        if control:
            with self.timer("control"):
                self._finish_control(trained=fused)
        self.extra.update(self._describe(log, fused))

    def _prepare_control(self) -> None:
        """The random-source control: an untrained source of the same architecture, its activations, and
        its adapter (initialised like the stitched one) with that adapter's accuracy before training."""
        config, ctx = self.config, self.ctx
        cut = self.cut_of["source"]
        random_source = ctx.random_model(config.source.name, config.stitch_seed, self.num_classes)
        front, _ = split_model(random_source, cut.name)
        identity = {"random": config.source.name, "seed": config.stitch_seed, "cut": cut.name}
        self.control_acts = {s: ctx.front_activations(identity, front, config.dataset, s) for s in SPLITS}
        self.control_adapter = self.build(config.init, self.control_acts["train"])
        init_logits = self.stitched_logits(self.control_adapter.eval(), self.control_acts["test"])
        self.metrics["control_init_acc"] = accuracy(init_logits, self.labels["test"])

    def _finish_control(self, trained: bool) -> None:
        m = self.metrics
        if not trained:
            train_adapters(
                [self.control_adapter], self.target.back, [self.control_acts["train"]], self.labels["train"],
                self.config.recipe, self.options([self.control_acts["val"]], "control.pt"),
            )  # fmt: skip
        logits = self.stitched_logits(self.control_adapter, self.control_acts["test"])
        m["control_acc"] = accuracy(logits, self.labels["test"])
        m["control_penalty"] = m["target_acc"] - m["control_acc"]

    def _describe(self, log, fused: bool) -> dict[str, Any]:
        return {
            "adapter_params": num_trainable_parameters(self.adapter),
            "training": {
                "initial": log.initial,
                "epochs": log.epochs,
                "steps": log.steps,
                "resumed_from_epoch": log.resumed_from_epoch,
                "fused_control": fused,
                "devices": log.devices,
            },
            "base_models": {"source": self.source.info, "target": self.target.info},
            "specs": {"source": _spec_dict(self.source.spec), "target": _spec_dict(self.target.spec)},
        }

    def alignment(self) -> None:
        """Alignment metrics between the two cuts' test activations."""
        from stitching.metrics import get_metric, reduce_activation

        config = self.config
        if not config.metrics:
            return
        with self.timer("alignment"):
            xs, yt = self.source.acts["test"], self.target.acts["test"]
            n = min(len(xs), config.metric_samples)
            rule = config.metric_reduction
            x = reduce_activation(xs[:n].double(), rule, num_prefix_tokens=self.source.num_prefix_tokens)
            y = reduce_activation(yt[:n].double(), rule, num_prefix_tokens=self.target.num_prefix_tokens)
            for name in config.metrics:
                self.metrics[name] = float(get_metric(name)(x, y))


def _spec_dict(spec: ActivationSpec) -> dict:
    return {
        "layout": spec.layout,
        "channels": spec.channels,
        "grid": list(spec.grid),
        "num_prefix_tokens": spec.num_prefix_tokens,
    }
