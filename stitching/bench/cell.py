"""One benchmark cell: stitch a source front into a target back at one pair of cuts and score it.

``run_cell(cell, store_dir)`` is the only function executors call. It skips a cell whose record exists,
checkpoints adapter training so a preempted job resumes, and writes one self-describing record atomically.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from stitching.bench.context import CellContext
from stitching.bench.record import make_record
from stitching.bench.runtime import Runtime
from stitching.bench.store import ResultStore
from stitching.core.optim import Recipe
from stitching.bench.train import accuracy, predict, train_adapter, train_adapters

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
    cell: dict[str, Any],
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
    done = store.has(cell["cell_id"])
    if ctx.fabric is not None:  # every rank must take the same branch: rank 0 decides
        done = ctx.fabric.broadcast(done)
    if done:
        return store.read(cell["cell_id"])
    work_dir = Path(store_dir) / "work" / cell["cell_id"]
    timer = _Timer()
    metrics, extra = _score_cell(cell["config"], ctx, timer, work_dir)
    record = make_record(cell, metrics, timer.seconds, **extra)
    ctx.barrier()  # every rank is past the cell's last collective before rank 0 removes its checkpoints
    if not ctx.is_global_zero:
        return record
    store.write(record)
    for leftover in work_dir.glob("*.pt"):
        leftover.unlink()
    for leftover_dir in (work_dir, work_dir.parent):  # checkpoints only matter until the record exists
        if leftover_dir.is_dir() and not any(leftover_dir.iterdir()):
            leftover_dir.rmdir()
    return record


def _score_cell(config: dict, ctx: CellContext, timer: _Timer, work_dir: Path) -> tuple[dict, dict]:
    from stitching.adapters import AdapterConfig, create_adapter
    from stitching.cuts import get_cut, split_model

    dataset = config["dataset"]
    recipe = Recipe(**config["recipe"])
    with timer("data"), ctx.rank_zero_first():  # with DDP: rank 0 downloads, the others then read
        datamodule = ctx.datamodule(dataset)
        num_classes = datamodule.num_classes
        labels = {split: ctx.labels(dataset, split) for split in ("train", "val", "test")}
    with timer("base_models"), ctx.rank_zero_first():  # rank 0 trains a missing base model, once
        source, source_info = ctx.model(config["source"], num_classes)
        target, target_info = ctx.model(config["target"], num_classes)
    src_cut = get_cut(source, config["source_cut"])
    tgt_cut = get_cut(target, config["target_cut"])
    src_front, src_back = split_model(source, src_cut)
    tgt_front, tgt_back = split_model(target, tgt_cut)

    with timer("activations"):
        src_id = {"model": config["source"], "cut": src_cut.name}
        tgt_id = {"model": config["target"], "cut": tgt_cut.name}
        xs = {s: ctx.front_activations(src_id, src_front, dataset, s) for s in ("train", "val", "test")}
        yt = {s: ctx.front_activations(tgt_id, tgt_front, dataset, s) for s in ("train", "test")}

    m: dict[str, float] = {}
    with timer("baselines"):
        target_logits = predict(tgt_back, yt["test"], device=ctx.device, speed=ctx.speed)
        m["target_acc"] = accuracy(target_logits, labels["test"])
        m["source_acc"] = accuracy(
            predict(src_back, xs["test"], device=ctx.device, speed=ctx.speed), labels["test"]
        )
        target_pred = target_logits.argmax(1)

    src_spec = _spec(xs["test"], src_cut)
    tgt_spec = _spec(yt["test"], tgt_cut)
    adapter_config = AdapterConfig(**config["adapter"])

    def build(init: str, inputs: torch.Tensor, seed: int):
        torch.manual_seed(seed)
        data = _pairs(inputs, yt["train"], recipe.batch_size * 4) if init == "lstsq" else None
        return create_adapter(src_spec, tgt_spec, adapter_config, init=init, data=data)

    def stitched(adapter, inputs):
        return predict(lambda z: tgt_back(adapter(z)), inputs, device=ctx.device, speed=ctx.speed)

    seed = config["stitch_seed"]
    with timer("lstsq"):
        lstsq = build("lstsq", xs["train"], seed).to(ctx.device).eval()
        m["lstsq_acc"] = accuracy(stitched(lstsq, xs["test"]), labels["test"])
    with timer("adapter_init"):
        adapter = (
            lstsq if config["init"] == "lstsq" else build(config["init"], xs["train"], seed).to(ctx.device)
        )
        m["init_acc"] = accuracy(stitched(adapter.eval(), xs["test"]), labels["test"])
    control = "random_source" in config["controls"]
    if control:
        with timer("control"):
            xr, control_adapter, m["control_init_acc"] = _random_source_control(
                config, ctx, src_cut, labels, build, stitched, num_classes
            )
    # One pass through the back for the stitched adapter and the control when they can share it.
    fused = control and ctx.speed.fused(ctx.device)
    with timer("train"):
        adapters, inputs, val_inputs = [adapter], [xs["train"]], [xs["val"]]
        if fused:
            adapters, inputs, val_inputs = (
                [adapter, control_adapter],
                [*inputs, xr["train"]],
                [*val_inputs, xr["val"]],
            )
        log, *_ = train_adapters(
            adapters,
            tgt_back,
            inputs,
            labels["train"],
            recipe,
            seed=seed,
            val=(val_inputs, labels["val"]),
            device=ctx.device,
            checkpoint=work_dir / ("adapters.pt" if fused else "adapter.pt"),
            speed=ctx.speed,
            fabric=ctx.fabric,
        )
    with timer("eval"):
        logits = stitched(adapter, xs["test"])
        m["stitched_acc"] = accuracy(logits, labels["test"])
        m["agreement"] = (logits.argmax(1) == target_pred).float().mean().item()
        m["stitched_val_acc"] = log.epochs[-1]["val_acc"] if log.epochs else float("nan")
        m["penalty"] = m["target_acc"] - m["stitched_acc"]
    if control:
        with timer("control"):
            if not fused:
                train_adapter(
                    control_adapter,
                    tgt_back,
                    xr["train"],
                    labels["train"],
                    recipe,
                    seed=seed,
                    val=(xr["val"], labels["val"]),
                    device=ctx.device,
                    checkpoint=work_dir / "control.pt",
                    speed=ctx.speed,
                    fabric=ctx.fabric,
                )
            m["control_acc"] = accuracy(stitched(control_adapter, xr["test"]), labels["test"])
        m["control_penalty"] = m["target_acc"] - m["control_acc"]

    with timer("alignment"):
        m.update(_alignment(config, xs["test"], yt["test"], src_cut, tgt_cut))

    extra = {
        "adapter_params": sum(p.numel() for p in adapter.parameters() if p.requires_grad),
        "training": {
            "initial": log.initial,
            "epochs": log.epochs,
            "steps": log.steps,
            "resumed_from_epoch": log.resumed_from_epoch,
            "fused_control": fused,
            "devices": log.devices,
        },
        "base_models": {"source": source_info, "target": target_info},
        "specs": {"source": _spec_dict(src_spec), "target": _spec_dict(tgt_spec)},
    }
    return m, extra


def _random_source_control(config, ctx, src_cut, labels, build, stitched, num_classes):
    """The same cell with an untrained source of the same architecture: its activations, its adapter
    (initialised like the stitched one) and that adapter's accuracy before training."""
    from stitching.cuts import split_model

    seed = config["stitch_seed"]
    random_source = ctx.random_model(config["source"]["name"], seed, num_classes)
    front, _ = split_model(random_source, src_cut.name)
    identity = {"random": config["source"]["name"], "seed": seed, "cut": src_cut.name}
    xr = {s: ctx.front_activations(identity, front, config["dataset"], s) for s in ("train", "val", "test")}
    adapter = build(config["init"], xr["train"], seed).to(ctx.device)
    return xr, adapter, accuracy(stitched(adapter.eval(), xr["test"]), labels["test"])


def _alignment(config, xs, yt, src_cut, tgt_cut) -> dict[str, float]:
    from stitching.metrics import get_metric, reduce_activation

    if not config["metrics"]:
        return {}
    n = min(len(xs), config["metric_samples"])
    rule = config["metric_reduction"]
    x = reduce_activation(xs[:n].double(), rule, num_prefix_tokens=src_cut.spec.num_prefix_tokens)
    y = reduce_activation(yt[:n].double(), rule, num_prefix_tokens=tgt_cut.spec.num_prefix_tokens)
    return {name: float(get_metric(name)(x, y)) for name in config["metrics"]}


def _pairs(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int):
    for i in range(0, len(inputs), batch_size):
        yield inputs[i : i + batch_size].float(), targets[i : i + batch_size].float()


def _spec(activation: torch.Tensor, cut):
    from stitching.cuts import ActivationSpec

    grid = cut.spec.grid if activation.ndim == 3 else None
    if grid is not None and grid[0] * grid[1] != activation.shape[1] - cut.spec.num_prefix_tokens:
        grid = None  # the dataset's input size differs from the model's default: infer a square grid
    return ActivationSpec.from_tensor(activation[:1], cut.spec.num_prefix_tokens, grid)


def _spec_dict(spec) -> dict:
    return {
        "layout": spec.layout,
        "channels": spec.channels,
        "grid": list(spec.grid),
        "num_prefix_tokens": spec.num_prefix_tokens,
    }
