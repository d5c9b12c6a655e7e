"""Per-cell speed: our cached path vs the straightforward harness vs the cost floor, side by side in one run.

For each chosen cell of a suite (default: shallow, middle and deep cuts of some pairs of the digits suite):

- **harness**: :func:`stitching.bench.straightforward.train_straightforward`: both whole models at every step,
  random-init adapter, the recipe's full epoch budget. Its final validation accuracy is A, its time T.
- **ours**: compute this cell's front activations from scratch (source train/val, target train; a cold
  cache, so the cell pays the caching it would share in a suite), ``lstsq`` adapter, then
  :func:`stitching.core.training.train_adapter` with validation before training and after every epoch.
  Time to A = setup + elapsed time of the first validation with accuracy >= A.
- **floor**: the target back's forward + input-gradient backward on cached target activations, for the same
  number of steps, in the back's fastest memory format; ``ours/floor`` compares our training loop to it.
- **fused vs apart**: the stitched adapter and the random-source control trained in one pass through the
  back (:func:`~stitching.core.training.train_adapters`) vs two separate passes.

    python benchmarks/speed_cell.py --threads 1 --pairs resnet:resnet convnext:resnet --out speed_cell.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from straightforward import train_straightforward  # benchmarks/straightforward.py, beside this script

from stitching.bench.cache import ActivationCache, cache_key
from stitching.bench.cell import _pairs, _spec
from stitching.bench.context import CellContext
from stitching.bench.data import split_loader
from stitching.bench.grid import expand_suite
from stitching.bench.suite import load_suite
from stitching.core.optim import Recipe
from stitching.core.training import train_adapter, train_adapters


def select_cells(suite_path: str, pairs: list[str]) -> list[dict]:
    """Non-self cells of the suite whose (source key, target key) is in ``pairs`` (``src:tgt``), by depth."""
    wanted = [tuple(p.split(":")) for p in pairs]
    cells = [
        c
        for c in expand_suite(load_suite(suite_path))
        if (c["config"]["source"]["key"], c["config"]["target"]["key"]) in wanted
        and c["config"]["pair_kind"] != "self"
        and c["config"]["stitch_seed"] == 0
    ]
    return cells


def images(ctx: CellContext, dataset: dict, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(split_loader(ctx.datamodule(dataset), split, 512))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def measure_cell(cell: dict, ctx: CellContext, epochs: int | None) -> dict:
    from stitching.adapters import AdapterConfig, create_adapter
    from stitching.cuts import get_cut, split_model

    config = cell["config"]
    recipe = Recipe(**{**config["recipe"], **({"epochs": epochs} if epochs else {})})
    dataset, seed = config["dataset"], config["stitch_seed"]
    source, _ = ctx.model(config["source"], 10)
    target, _ = ctx.model(config["target"], 10)
    src_cut = get_cut(source, config["source_cut"])
    tgt_cut = get_cut(target, config["target_cut"])
    src_front, _ = split_model(source, src_cut)
    tgt_front, tgt_back = split_model(target, tgt_cut)
    train_x, train_y = images(ctx, dataset, "train")
    val_x, val_y = images(ctx, dataset, "val")
    adapter_config = AdapterConfig(**config["adapter"])
    src, tgt = config["source"], config["target"]
    out = {"cell": f"{src['key']} s{src['seed']}->{tgt['key']} s{tgt['seed']} {src_cut.name}->{tgt_cut.name}"}

    # Ours, from a cold cache: front activations, lstsq fit, training with validation.
    clock = Clock()
    cache = ActivationCache(None, memory_budget_gb=8.0)

    def act(front, split):
        loader = split_loader(ctx.datamodule(dataset), split, ctx.batch_size)
        first = front(next(iter(loader))[0][:1])
        key = cache_key(front=id(front), split=split)
        return cache.get(
            key, lambda: (front(x) for x, _ in loader), len(loader.dataset), tuple(first.shape[1:])
        )

    with torch.no_grad():
        xs, xv, yt = act(src_front, "train"), act(src_front, "val"), act(tgt_front, "train")
    cache_s = clock.lap()
    src_spec, tgt_spec = _spec(xs, src_cut), _spec(yt, tgt_cut)
    torch.manual_seed(seed)
    ours = create_adapter(src_spec, tgt_spec, adapter_config, init="lstsq", data=_pairs(xs, yt, 512))
    setup_s = clock.lap()
    log = train_adapter(ours, tgt_back, xs, train_y, recipe, seed=seed, val=(xv, val_y), speed=ctx.speed)

    # The straightforward harness: random init, full budget, default (contiguous) memory format.
    source.to(memory_format=torch.contiguous_format)
    target.to(memory_format=torch.contiguous_format)
    torch.manual_seed(seed)
    naive = create_adapter(src_spec, tgt_spec, adapter_config, init="random")
    naive_init = copy.deepcopy(naive)
    hlog = train_straightforward(
        source,
        target,
        src_cut.name,
        tgt_cut.name,
        naive,
        train_x,
        train_y,
        recipe,
        seed=seed,
        val=(val_x, val_y),
    )
    target_acc = hlog.epochs[-1]["val_acc"]
    # Our loop from the harness's random init: the same computation (same accuracy), only the cost differs.
    same = train_adapter(
        naive_init, tgt_back, xs, train_y, recipe, seed=seed, val=(xv, val_y), speed=ctx.speed
    )

    reached = [e["cpu_seconds"] for e in (log.initial, *log.epochs) if e["val_acc"] >= target_acc]
    time_to_a = cache_s + setup_s + reached[0] if reached else math.inf

    # Floor: the back alone (forward + input gradients) for the same steps, fastest format, best of two.
    floor = min(back_floor(tgt_back, yt, train_y, recipe, log.steps, f) for f in _formats(yt) * 2)

    # Stitched + control in one pass vs two passes (a second lstsq adapter on shuffled source activations
    # stands in for the control's inputs: same shapes, same cost).
    control_x = xs[torch.randperm(len(xs), generator=torch.Generator().manual_seed(1))]
    pair = [
        create_adapter(src_spec, tgt_spec, adapter_config, init="lstsq", data=_pairs(x, yt, 512))
        for x in (xs, control_x)
    ]
    apart = sum(
        train_adapter(
            a, tgt_back, x, train_y, recipe, seed=seed, val=(xv, val_y), speed=ctx.speed
        ).cpu_seconds
        for a, x in zip(copy.deepcopy(pair), (xs, control_x), strict=True)
    )
    fused = train_adapters(
        pair, tgt_back, [xs, control_x], train_y, recipe, seed=seed, val=([xv, xv], val_y), speed=ctx.speed
    )[0].cpu_seconds

    out.update(
        harness_val_acc=target_acc,
        harness_cpu_s=hlog.cpu_seconds,
        harness_wall_s=hlog.seconds,
        ours_initial_val_acc=log.initial["val_acc"],
        ours_final_val_acc=log.epochs[-1]["val_acc"],
        ours_cache_cpu_s=cache_s,
        ours_setup_cpu_s=setup_s,
        ours_train_cpu_s=log.cpu_seconds,
        ours_time_to_A_cpu_s=time_to_a,
        speedup_to_A=hlog.cpu_seconds / time_to_a,
        same_init_val_acc=same.epochs[-1]["val_acc"],
        same_init_speedup=hlog.cpu_seconds / same.cpu_seconds,
        steps=log.steps,
        floor_cpu_s=floor,
        ours_over_floor=log.cpu_seconds / floor,
        fused_cpu_s=fused,
        apart_cpu_s=apart,
        fused_speedup=apart / fused,
    )
    return out


class Clock:
    """CPU seconds of this process between laps: steadier than wall time on a shared machine."""

    def __init__(self) -> None:
        self.last = time.process_time()

    def lap(self) -> float:
        now = time.process_time()
        elapsed, self.last = now - self.last, now
        return elapsed


def _formats(example: torch.Tensor) -> list[torch.memory_format]:
    return [torch.contiguous_format, torch.channels_last] if example.ndim == 4 else [torch.contiguous_format]


def back_floor(back, yt, labels, recipe: Recipe, steps: int, fmt) -> float:
    """Seconds for ``steps`` forward + input-gradient backward passes of ``back`` on cached activations."""
    back.to(memory_format=fmt if yt.ndim == 4 else torch.contiguous_format)
    n, bs = len(yt), recipe.batch_size
    starts = [(s * bs) % n for s in range(steps)]
    batches = [
        (yt[i : i + bs].contiguous(memory_format=fmt), labels[i : i + bs]) for i in sorted(set(starts))
    ]
    lookup = {i: b for i, b in zip(sorted(set(starts)), batches, strict=True)}
    clock = Clock()
    for i in starts:
        x, y = lookup[i]
        x = x.detach().requires_grad_()
        F.cross_entropy(back(x), y).backward()
    return clock.lap()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="benchmarks/digits.yaml")
    parser.add_argument("--pairs", nargs="+", default=["resnet:resnet"], help="source_key:target_key")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ctx = CellContext()  # the default runtime: this machine's device, default speed switches
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    for cell in select_cells(args.suite, args.pairs):
        row = measure_cell(cell, ctx, args.epochs)
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
