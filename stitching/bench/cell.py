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

from stitching._utils import DiskFullError, stable_hash
from stitching.bench import claims
from stitching.bench.cell_config import Cell, CellConfig
from stitching.bench.context import CellContext
from stitching.bench.controls import PREFIXES, clustered_noise
from stitching.bench.record import make_record
from stitching.bench.runtime import Runtime
from stitching.bench.statistics import cell_statistics
from stitching.bench.store import ResultStore
from stitching.core.activations import (
    ACTIVATION_BATCH_SIZE,
    StreamedActivations,
    activation_spec,
    paired_batches,
)
from stitching.core.adapters import build_adapter
from stitching.core.evaluate import accuracy, predict
from stitching.core.training import MatchTargets, TrainLog, TrainOptions, train_adapters
from stitching.cuts import ActivationSpec, CutPoint, get_cut, split_model
from stitching.metrics import DegenerateActivationError, permutation_test, reduce_activation
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

    The cell is claimed first (`stitching.bench.claims`): a cell another live process holds raises
    `claims.CellClaimed`, and only the claimer resumes from the cell's checkpoints. ``runtime`` chooses the
    devices (see :mod:`stitching.bench.runtime`); with DDP every rank calls this for the same cells in the
    same order, rank 0 claims and tells the others, and rank 0 writes the record.
    """
    store = ResultStore(store_dir)
    ctx = context or default_context(runtime)
    work_dir = Path(store_dir) / "work" / cell.cell_id
    claim, status = claims.claim_cell(store, cell.cell_id) if ctx.is_global_zero else (None, "")
    if ctx.fabric is not None:  # every rank must take the same branch: rank 0 decides
        status = ctx.fabric.broadcast(status)
    if status == "done":
        return store.read(cell.cell_id)
    if status.startswith("elsewhere"):
        raise claims.CellClaimed(f"cell {cell.cell_id} is running elsewhere: {status.split(':', 1)[1]}")
    try:
        return _compute(cell, store, ctx, work_dir, claim)
    finally:
        if claim is not None:
            claim.release()


def _compute(
    cell: Cell, store: ResultStore, ctx: CellContext, work_dir: Path, claim: claims.Claim | None
) -> dict[str, Any]:
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
    if claim is not None:
        record["claim"] = claim.describe()
    try:
        record["features"] = {
            side: store.write_features(_feature_key(cell.config, side), x) for side, x in run.features.items()
        }
        store.write(record, predictions=run.predictions)
    except DiskFullError as error:
        kept = [str(p) for p in sorted(work_dir.glob("*.pt"))]
        raise DiskFullError(
            error.errno,
            f"{error.strerror}; cell {cell.cell_id} is not recorded, its adapter checkpoints "
            f"are kept ({', '.join(kept) or 'none'}): free space and re-run: it resumes from them",
        ) from error
    _remove_checkpoints(work_dir)
    return record


def _feature_key(config: CellConfig, side: str) -> str:
    """What determines one side's reduced test activations: the same key for every cell that shares them."""
    model = config.source if side == "source" else config.target
    cut = config.source_cut if side == "source" else config.target_cut
    what = [asdict(model), cut, config.dataset, config.metric_reduction, config.metric_samples]
    return stable_hash(what, 16)


def _remove_checkpoints(work_dir: Path) -> None:
    """Checkpoints only matter until the record exists."""
    for leftover in work_dir.glob("*.pt"):
        leftover.unlink()
    for leftover_dir in (work_dir, work_dir.parent):
        if leftover_dir.is_dir() and not any(leftover_dir.iterdir()):
            leftover_dir.rmdir()


@dataclass
class _Control:
    """A control of the cell: its activations per split, its adapter, and how training went."""

    name: str
    prefix: str
    acts: dict[str, torch.Tensor]
    adapter: nn.Module | None = None
    log: TrainLog | None = None


@dataclass
class _Side:
    """One model of the cell, cut: its back, and its front's activations per split."""

    back: nn.Module
    acts: dict[str, torch.Tensor]
    spec: ActivationSpec
    """The spec of the actual activation (its grid may differ from the model's default input size)."""
    cut: CutPoint
    info: dict = field(default_factory=dict)


class _CellRun:
    """The steps of one cell; each fills ``metrics`` (and ``extra`` for the record)."""

    def __init__(self, config: CellConfig, ctx: CellContext, work_dir: Path) -> None:
        self.config, self.ctx, self.work_dir = config, ctx, work_dir
        self.timer = _Timer()
        self.metrics: dict[str, float | None] = {}
        """Scores by name; None where a diverged adapter has no score."""
        self.extra: dict[str, Any] = {}
        self.features: dict[str, torch.Tensor] = {}
        """The reduced test activations the alignment metrics saw, by side (kept beside the record)."""
        self.predictions: dict[str, torch.Tensor] = {}
        """Per-image predicted class on the test split, by model (kept beside the record)."""

    def score(self) -> None:
        self.load()
        self.baselines()
        self.least_squares()
        self.train()
        self.statistics()
        self.alignment()

    def logits(self, head, inputs: torch.Tensor) -> torch.Tensor:
        return predict(head, inputs, device=self.ctx.device, speed=self.ctx.speed)

    def stitched_logits(self, adapter: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        back = self.target.back
        return self.logits(lambda z: back(adapter(z)), inputs)

    def load(self) -> None:
        """Data and models: labels of every split, both models cut, their front activations (cached)."""
        config, ctx = self.config, self.ctx
        with self.timer("data"), ctx.rank_zero_first():  # with DDP: rank 0 downloads, the others then read
            self.num_classes = ctx.datamodule(config.dataset).num_classes
            self.subset = (config.train_per_class, config.subset_seed) if config.train_per_class else None
            self.labels = {split: ctx.labels(config.dataset, split, self.subset) for split in SPLITS}
        with self.timer("base_models"), ctx.rank_zero_first():  # rank 0 trains a missing base model, once
            source, source_info = ctx.model(config.source, self.num_classes)
            target, target_info = ctx.model(config.target, self.num_classes)
        with self.timer("activations"):
            self.source = self._side(source, config.source_cut, "source", SPLITS, source_info)
            self.target = self._side(target, config.target_cut, "target", ("train", "test"), target_info)
        self.extra["activations"] = self._activation_record()

    def _activations(self, identity, front, splits) -> dict[str, torch.Tensor]:
        """A front's activations per split: cached, or streamed where they do not fit the budgets."""
        config = self.config
        return {
            s: self.ctx.front_activations(identity, front, config.dataset, s, config.cache_dtype, self.subset)
            for s in splits
        }

    def _activation_record(self) -> dict[str, Any]:
        """How the activations were kept (``path``: the training split's), their dtype, the subset."""
        streamed = isinstance(self.source.acts["train"], StreamedActivations)
        out = {"path": "streamed" if streamed else "cached", "dtype": self.config.cache_dtype}
        if self.subset is not None:
            out["train_subset"] = self.ctx.subset_record(self.config.dataset, self.subset)
        return out

    def _side(self, model, cut_name, role, splits, info) -> _Side:
        cut = get_cut(model, cut_name)
        front, back = split_model(model, cut)
        identity = {"model": self.config.to_dict()[role], "cut": cut.name}
        acts = self._activations(identity, front, splits)
        return _Side(back, acts, activation_spec(acts["test"], cut), cut, info)

    def baselines(self) -> None:
        """The target and the source alone on the test split."""
        test = self.labels["test"]
        with self.timer("baselines"):
            target_logits = self.logits(self.target.back, self.target.acts["test"])
            self.metrics["target_acc"] = accuracy(target_logits, test)
            source_logits = self.logits(self.source.back, self.source.acts["test"])
            self.metrics["source_acc"] = accuracy(source_logits, test)
            self.target_pred = target_logits.argmax(1)
        self.predictions.update(labels=test, target=self.target_pred, source=source_logits.argmax(1))

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
            self.predictions["lstsq"] = lstsq_logits.argmax(1)
            self.metrics["lstsq_acc"] = accuracy(lstsq_logits, self.labels["test"])
        with self.timer("adapter_init"):
            init = self.config.init
            self.adapter = lstsq if init == "lstsq" else self.build(init, self.source.acts["train"])
            init_logits = self.stitched_logits(self.adapter.eval(), test_inputs)
            self.predictions["init"] = init_logits.argmax(1)
            self.metrics["init_acc"] = accuracy(init_logits, self.labels["test"])

    def train(self) -> None:
        """Adapter training, and the controls trained exactly like it (in the same pass through the back
        where ``Speed.fuse`` asks)."""
        ctx, m = self.ctx, self.metrics
        with self.timer("control"):
            controls = [self._prepare_control(name) for name in self.config.controls]
        fused = bool(controls) and ctx.speed.fused(ctx.device)
        group = [(self.adapter, self.source.acts)] + [(c.adapter, c.acts) for c in controls if fused]
        with self.timer("train"):
            log, *control_logs = self._train(group, "adapters.pt" if fused else "adapter.pt")
        with self.timer("eval"):
            if log.diverged_epoch is not None:  # no accuracy: said in the record (training.diverged_epoch)
                m.update(dict.fromkeys(("stitched_acc", "agreement", "stitched_val_acc", "penalty")))
            else:
                logits = self.stitched_logits(self.adapter, self.source.acts["test"])
                self.predictions["stitched"] = logits.argmax(1)
                m["stitched_acc"] = accuracy(logits, self.labels["test"])
                m["agreement"] = (logits.argmax(1) == self.target_pred).float().mean().item()
                m["stitched_val_acc"] = log.epochs[-1]["val_acc"] if log.epochs else float("nan")
                m["penalty"] = m["target_acc"] - m["stitched_acc"]
        with self.timer("control"):
            for i, control in enumerate(controls):
                own = [(control.adapter, control.acts)]
                control.log = control_logs[i] if fused else self._train(own, f"{control.name}.pt")[0]
                self._score_control(control)
        self.extra.update(self._describe(log, fused, controls))

    def _train(self, group: list[tuple[nn.Module, dict[str, torch.Tensor]]], checkpoint: str) -> list:
        config, ctx = self.config, self.ctx
        targets = None if config.objective == "task" else MatchTargets.of(self.target.acts["train"])
        options = TrainOptions(
            seed=config.stitch_seed,
            val=([acts["val"] for _, acts in group], self.labels["val"]),
            device=ctx.device,
            checkpoint=self.work_dir / checkpoint,
            speed=ctx.speed,
            fabric=ctx.fabric,
            objective=config.objective,
            targets=targets,
        )
        adapters, inputs = [a for a, _ in group], [acts["train"] for _, acts in group]
        labels = self.labels["train"]
        return train_adapters(adapters, self.target.back, inputs, labels, config.recipe, options)

    def _prepare_control(self, name: str) -> _Control:
        """A control's activations, its adapter (initialised like the stitched one) and that adapter's
        accuracy before training."""
        control = _Control(name, PREFIXES[name], self._control_activations(name))
        control.adapter = self.build(self.config.init, control.acts["train"])
        init_logits = self.stitched_logits(control.adapter.eval(), control.acts["test"])
        self.metrics[f"{control.prefix}_init_acc"] = accuracy(init_logits, self.labels["test"])
        return control

    def _control_activations(self, name: str) -> dict[str, torch.Tensor]:
        config, ctx = self.config, self.ctx
        if name == "clustered_noise":
            seed, acts = config.stitch_seed, self.source.acts
            return {
                split: clustered_noise(self.labels[split], acts[split], self.num_classes, seed, i + 1)
                for i, split in enumerate(SPLITS)
            }
        cut = self.source.cut  # random_source: an untrained source of the same architecture
        random_source = ctx.random_model(config.source.name, config.stitch_seed, self.num_classes)
        front, _ = split_model(random_source, cut.name)
        identity = {"random": config.source.name, "seed": config.stitch_seed, "cut": cut.name}
        return self._activations(identity, front, SPLITS)

    def _score_control(self, control: _Control) -> None:
        m, prefix = self.metrics, control.prefix
        if control.log.diverged_epoch is not None:
            m[f"{prefix}_acc"] = m[f"{prefix}_penalty"] = None
            return
        logits = self.stitched_logits(control.adapter, control.acts["test"])
        self.predictions[control.name] = logits.argmax(1)
        m[f"{prefix}_acc"] = accuracy(logits, self.labels["test"])
        m[f"{prefix}_penalty"] = m["target_acc"] - m[f"{prefix}_acc"]

    def _describe(self, log: TrainLog, fused: bool, controls: list[_Control]) -> dict[str, Any]:
        return {
            "adapter_params": num_trainable_parameters(self.adapter),
            "training": {
                **_log_summary(log),
                "epochs": log.epochs,
                "steps": log.steps,
                "resumed_from_epoch": log.resumed_from_epoch,
                "fused_control": fused,
                "devices": log.devices,
                "controls": {c.name: _log_summary(c.log) for c in controls},
            },
            "base_models": {"source": self.source.info, "target": self.target.info},
            "specs": {"source": _spec_dict(self.source.spec), "target": _spec_dict(self.target.spec)},
        }

    def statistics(self) -> None:
        """Intervals of every accuracy and penalty, and the McNemar p-value, from the test predictions."""
        with self.timer("statistics"):
            stats = cell_statistics({k: v.cpu().numpy() for k, v in self.predictions.items()})
        self.metrics["penalty_p"] = stats.pop("penalty_p")
        self.extra["statistics"] = stats

    def alignment(self) -> None:
        """Alignment metrics between the two cuts' test activations, each with its permutation test (its
        p-value, the null's 95th percentile and the calibrated score)."""
        config = self.config
        if not config.metrics:
            return
        with self.timer("alignment"):
            xs, yt = self.source.acts["test"], self.target.acts["test"]
            n = min(len(xs), config.metric_samples)
            rule = config.metric_reduction
            x = reduce_activation(xs[:n].double(), rule, num_prefix_tokens=self.source.spec.num_prefix_tokens)
            y = reduce_activation(yt[:n].double(), rule, num_prefix_tokens=self.target.spec.num_prefix_tokens)
            self.features = {"source": x.float(), "target": y.float()}
            for name in config.metrics:
                try:
                    test = permutation_test(name, x, y, n_permutations=config.permutations, seed=0)
                except DegenerateActivationError as err:  # a dead layer: said in the record, cell kept
                    self.extra.setdefault("alignment_errors", {})[name] = str(err)
                    continue
                self.metrics[name] = test.score
                self.metrics[f"{name}_p"] = test.p_value
                self.metrics[f"{name}_null95"] = test.null95
                self.metrics[f"{name}_calibrated"] = test.calibrated


def _log_summary(log: TrainLog) -> dict[str, Any]:
    """How training ended: its initial validation score, epochs run, best epoch, and whether it converged."""
    last = log.epochs[-1] if log.epochs else {}
    return {
        "initial": log.initial,
        "epochs_run": len(log.epochs),
        "best_epoch": log.best_epoch,
        "converged": log.converged,
        "diverged_epoch": log.diverged_epoch,
        "final_val_loss": last.get("val_loss"),
        "final_train_loss": last.get("loss"),
    }


def _spec_dict(spec: ActivationSpec) -> dict:
    return {
        "layout": spec.layout,
        "channels": spec.channels,
        "grid": list(spec.grid),
        "num_prefix_tokens": spec.num_prefix_tokens,
    }
