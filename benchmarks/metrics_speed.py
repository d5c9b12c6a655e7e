"""Time every registered alignment metric on CPU and print a Markdown table.

    python benchmarks/metrics_speed.py                      # N in {1000, 10000}, D in {64, 256, 1024, 2048}
    python benchmarks/metrics_speed.py --sizes 1000 --dims 64 256

Inputs are float32 (N, D) pairs, y a noisy random linear map of x, the same D on both sides. Cells with
N = max(sizes) and D = max(dims) each run in a fresh subprocess that also reports the peak resident memory
added by the metric call (Linux ``VmHWM`` after the call minus ``VmRSS`` before it, with the peak mark reset
via ``/proc/self/clear_refs``; the inputs are allocated before the baseline, so they are excluded).
``procrustes_distance`` is skipped (it is ``arccos`` of ``procrustes``). The Gram-form linear CKA (O(N^2 D)
time, N x N float64 Gram matrices) is timed only where N x N fits comfortably (N <= 2,000) to show what the
feature-space form saves; at N = 10,000 it would need two 800 MB Gram matrices and is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch

from stitching.metrics import functional as F
from stitching.metrics import get_metric, list_metrics

SKIPPED = {"procrustes_distance"}
GRAM_MAX_N = 2_000


def make_pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 inputs built without large temporaries, so the memory baseline is the live set."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = torch.randn(n, d, generator=gen)
    y.addmm_(x, torch.randn(d, d, generator=gen) / d**0.5)
    return x, y


def time_call(fn, x, y, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(x, y)
        best = min(best, time.perf_counter() - start)
    return best


def child(name: str, n: int, d: int, threads: int) -> None:
    """Fresh-process measurement of one cell: seconds and peak extra resident MB."""
    torch.set_num_threads(threads)
    fn = gram_cka if name == "linear_cka[gram]" else get_metric(name).fn
    fn(*make_pair(64, 8, seed=1))  # warm-up: lazy imports and kernels, not counted
    x, y = make_pair(n, d)
    # Reset the kernel's peak-RSS mark (Linux >= 4.0) so that transient memory from imports does not hide
    # the call's peak; then the peak is VmHWM after the call minus the resident set before it.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    seconds = time_call(fn, x, y, repeat=1)
    print(json.dumps({"seconds": seconds, "peak_mb": _status_mb("VmHWM") - before}))


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024  # reported in kB


def gram_cka(x, y):
    return F.linear_cka(x, y, form="gram")


def run_in_subprocess(name: str, n: int, d: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", name, str(n), str(d), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("METRIC", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # N <= D warnings are expected in the sweep
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.threads)
        return

    torch.set_num_threads(args.threads)
    names = [m for m in list_metrics() if m not in SKIPPED] + ["linear_cka[gram]"]
    big = (max(args.sizes), max(args.dims))
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
        f"load average at start {load[0]:.1f}; seconds per call (best of 3 when under 1 s)\n"
    )
    print("| N | D | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    peaks = {}
    for n in args.sizes:
        for d in args.dims:
            cells = []
            x, y = make_pair(n, d) if (n, d) != big else (None, None)
            for name in names:
                if name == "linear_cka[gram]" and n > GRAM_MAX_N:
                    cells.append("skipped")
                elif (n, d) == big:
                    result = run_in_subprocess(name, n, d, args.threads)
                    peaks[name] = result["peak_mb"]
                    cells.append(f"{result['seconds']:.3f}")
                else:
                    fn = gram_cka if name == "linear_cka[gram]" else get_metric(name).fn
                    once = time_call(fn, x, y, repeat=1)
                    cells.append(f"{min(once, time_call(fn, x, y, 2)) if once < 1 else once:.3f}")
            print(f"| {n:,} | {d:,} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nPeak extra resident memory of one call at N={big[0]:,}, D={big[1]:,} (MB, inputs excluded):\n")
    print("| metric | peak MB |\n|---|---|")
    for name, mb in peaks.items():
        print(f"| {name} | {mb:.0f} |")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
