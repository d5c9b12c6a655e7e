"""How a cell's cost grows with the data on each activation path: cached in memory, cached on disk, streamed.

Builds a synthetic ImageFolder (random-noise 224 px JPEGs, 10 classes: ``train/`` with N images, ``val/``
with 100, which is also the test split), then, for each N and each path, runs cells of a random-init
``test_vit`` seed 0 -> seed 1 stitch at depth 0.5 (inputs resized to ``--input-size``) in a fresh process
whose budgets force that path (``memory``: everything in memory; ``disk``: a memory budget of 1 MiB, so
every activation is memory-mapped; ``streamed``: ``--cache.path streamed``, the training split's fronts run
on the fly). Each process reports bytes written to the cache directory, peak anonymous memory
(``RssAnon``, sampled every 50 ms; mapped file pages are page cache and not counted) and resident set
(``VmHWM``), the time of the activation phase and of one training epoch per cell, and what the plan
(``stitching.bench.plan``) predicted for the same cells. With ``--cells 2`` (the smallest N) the second
cell (another stitch seed) shows what sharing costs: cached fronts are reused, streamed ones run again.

    python benchmarks/scale.py --sizes 600 1200 --root /tmp/stitching-scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PATHS = {
    "memory": {"memory_gb": 64.0, "path": "cached"},
    "disk": {"memory_gb": 1 / 1024, "path": "cached"},
    "streamed": {"memory_gb": 64.0, "path": "streamed"},
}


def make_folder(root: Path, train: int, val: int = 100, classes: int = 10, size: int = 224) -> Path:
    """``root/train/<class>/*.jpg`` (``train`` images) and ``root/val`` (``val``): random noise JPEGs."""
    from PIL import Image

    if (root / "done").exists():
        return root
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "done").touch()
    return root


def suite_dict(root: Path, input_size: int, cells: int) -> dict:
    return {
        "name": "scale",
        "version": "1",
        "dataset": {
            "class_path": "stitching.data.ImageFolderDataModule",
            "init_args": {"root": str(root), "image_size": input_size, "num_workers": 0},
        },
        "models": {"vit": {"name": "test_vit", "seeds": [0, 1]}},
        "pairs": {"mode": "same_arch", "include_self": False},
        "cuts": {"depths": [0.5]},
        "recipe": {"epochs": 1, "batch_size": 64},
        "stitch_seeds": list(range(cells)),
        "controls": [],
    }


def run_one(config: dict) -> dict:
    """One process, one path: run the cells of a source -> target stitch and measure them."""
    import torch
    from speed_memory import PeakSampler, status_mb

    from stitching.bench.cache import CacheSettings
    from stitching.bench.cell import _CellRun
    from stitching.bench.context import CellContext
    from stitching.bench.grid import expand_suite
    from stitching.bench.plan import gather
    from stitching.bench.runtime import Runtime
    from stitching.bench.suite import suite_from_dict

    torch.set_num_threads(1)
    suite = suite_from_dict(suite_dict(Path(config["root"]), config["input_size"], config["cells"]))
    cells = [c for c in expand_suite(suite) if c.config.source.seed == 0]
    settings = CacheSettings(disk_gb=None, **PATHS[config["path"]])
    cache_dir = Path(config["cache"])
    plan = gather(suite, cells, settings, cache_dir / "results")
    ctx = CellContext(cache_dir=cache_dir, runtime=Runtime(accelerator="cpu"), settings=settings)
    baseline = status_mb("RssAnon")
    sampler = PeakSampler()
    sampler.start()
    out = {**config, "cells_run": [], "baseline_mb": baseline}
    for cell in cells:
        run = _CellRun(cell.config, ctx, cache_dir / "work" / cell.cell_id)
        started = time.perf_counter()
        run.score()
        training = run.extra["training"]
        first = training["epochs"][0]["seconds"] - training["initial"].get("seconds", 0.0)
        out["cells_run"].append(
            {
                "path": run.extra["activations"]["path"],
                "seconds": time.perf_counter() - started,
                "activations_s": run.timer.seconds.get("activations", 0.0),
                "lstsq_s": run.timer.seconds.get("lstsq", 0.0),
                "epoch_s": first,
                "stitched_acc": run.metrics["stitched_acc"],
            }
        )
    sampler.running = False
    written = sum(p.stat().st_size for p in (cache_dir / "activations").glob("*.npy"))
    out.update(
        written_bytes=written,
        peak_anon_mb=sampler.peak,
        vm_hwm_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        plan_disk_bytes=plan.bytes_in("disk"),
        plan_memory_bytes=plan.bytes_in("memory"),
        plan_front_images=[c.front_images for c in plan.cells],
        plan_paths=[c.path for c in plan.cells],
    )
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| train images | path | cell | activations (s) | lstsq (s) | epoch (s) | cell (s) | written | "
        "peak anon MB (+ over baseline) | plan: front images, place |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        extra = r["peak_anon_mb"] - r["baseline_mb"]
        for i, c in enumerate(r["cells_run"]):
            planned = r["plan_paths"][i]
            place = planned if planned == "streamed" else ("disk" if r["plan_disk_bytes"] else "memory")
            cells = [
                f"{r['train']:,}", f"{c['path']} ({r['path']})", str(i + 1), f"{c['activations_s']:.1f}",
                f"{c['lstsq_s']:.1f}", f"{c['epoch_s']:.1f}", f"{c['seconds']:.1f}",
                f"{r['written_bytes'] / 2**20:.1f} MiB", f"{r['peak_anon_mb']:.0f} (+{extra:.0f})",
                f"{r['plan_front_images'][i]:,}, {place}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[600, 1200], help="training images")
    parser.add_argument("--input-size", type=int, default=112, help="model input side (JPEGs are 224 px)")
    parser.add_argument("--cells", type=int, default=2, help="cells sharing the fronts, at the smallest size")
    parser.add_argument("--root", default="/tmp/stitching-scale")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))))
        return
    started, rows = time.perf_counter(), []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for n in args.sizes:
        root = make_folder(Path(args.root) / f"images-{n}", n)
        for path in PATHS:
            cache = Path(args.root) / f"cache-{n}-{path}"
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            cells = args.cells if n == min(args.sizes) else 1
            config = {"root": str(root), "train": n, "path": path, "cache": str(cache)}
            config.update(input_size=args.input_size, cells=cells)
            done = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(config)],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(f"{n} {path} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
            print(f"{n} {path}: {time.perf_counter() - started:.0f} s so far", file=sys.stderr)
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
