"""An ImageNet-validation-sized activation cache in a memory budget: 50,000 x 256 x 14 x 14 float16 (4.7 GiB).

A synthetic producer yields the activation in batches (as a front would); the cache spills it to a
memory-mapped ``.npy`` file because it exceeds the budget, then the script reads it back the way adapter
training does (shuffled batches) and checks a few values. It reports the peak anonymous memory (``RssAnon``,
sampled every 50 ms: what the process really holds; file-backed pages of the map are reclaimable page cache)
and the peak resident set (``VmHWM``, which counts mapped file pages too). The file is deleted afterwards.

    python benchmarks/speed_memory.py --budget-gb 1 --dir /tmp/stitching-cache-bench
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

import torch

from stitching.bench.cache import ActivationCache


def status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


class PeakSampler(threading.Thread):
    """Largest ``RssAnon`` seen while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, status_mb("RssAnon"))
            time.sleep(0.05)


def sample(i: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A cheap, checkable synthetic activation: sample i is filled with (i % 1000) / 1000."""
    return torch.full(shape, (i % 1000) / 1000, dtype=torch.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 14, 14])
    parser.add_argument("--budget-gb", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dir", default="/tmp/stitching-cache-bench")
    args = parser.parse_args()
    shape, n = tuple(args.shape), args.samples
    directory = Path(args.dir)
    sampler = PeakSampler()
    baseline = status_mb("RssAnon")
    sampler.start()

    def batches():
        for start in range(0, n, args.batch):
            stop = min(n, start + args.batch)
            yield torch.stack([sample(i, shape) for i in range(start, stop)]).float()  # fronts yield float32

    cache = ActivationCache(directory, memory_budget_gb=args.budget_gb, dtype=torch.float16)
    t = time.perf_counter()
    try:
        acts = cache.get("imagenet-val", batches, n, shape)
        write_s = time.perf_counter() - t
        size_gib = acts.numel() * acts.element_size() / 2**30
        t = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for start in range(0, n, 128):  # one epoch of shuffled batches, as adapter training reads them
            idx = order[start : start + 128]
            batch = acts[idx].float()
            expected = ((idx % 1000) / 1000).half().float()
            assert torch.equal(batch[:, 0, 0, 0], expected), "cache returned wrong values"
        read_s = time.perf_counter() - t
        on_disk = sorted(p.name for p in directory.glob("*.npy"))
        sampler.running = False
        sampler.join()
        print(
            f"cache {n:,} x {'x'.join(map(str, shape))} float16 = {size_gib:.2f} GiB, "
            f"budget {args.budget_gb} GiB;"
            f" spilled to {on_disk}; in-memory bytes {cache.memory_bytes / 2**30:.2f} GiB\n"
            f"write {write_s:.1f} s, one shuffled epoch read {read_s:.1f} s\n"
            f"peak anonymous memory {sampler.peak:.0f} MB (baseline {baseline:.0f} MB, "
            f"+{sampler.peak - baseline:.0f} MB); "
            f"peak RSS incl. mapped file pages {status_mb('VmHWM'):.0f} MB"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
