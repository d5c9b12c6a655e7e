"""Time ``stitching.metrics.permutation_test`` for every registered metric and print a Markdown table.

    python benchmarks/permutation_speed.py                    # N = 1000, D in {64, 512}, K = 1000
    python benchmarks/permutation_speed.py --dims 64 --permutations 200

``fast`` is the whole ``permutation_test`` call (observed score, per-side precomputation and K permuted
scores) through the metric's fast path; ``generic`` calls the metric once per permutation, timed on
``--generic-sample`` permutations and scaled to K (it is linear in K). ``ridge_r2`` has no fast path, so both
columns are the generic path. Inputs are float32 (N, D) pairs, y a noisy random linear map of x. One torch
thread by default: on a loaded machine, several OpenMP threads spin against other work and small calls get
10x slower.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

from stitching.metrics import get_metric, list_metrics, permutation_test


def make_pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    return x, x @ torch.randn(d, d, generator=gen) / d**0.5 + torch.randn(n, d, generator=gen)


def seconds(name: str, x: torch.Tensor, y: torch.Tensor, k: int, fast: bool) -> float:
    start = time.perf_counter()
    permutation_test(name, x, y, n_permutations=k, fast=fast)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--generic-sample", type=int, default=20)
    parser.add_argument("--metrics", nargs="+", default=list_metrics())
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, sample = args.permutations, args.generic_sample
    load = os.getloadavg()[0]
    print(f"N = {args.n}, K = {k}, torch threads = {torch.get_num_threads()}, load average = {load:.1f}\n")
    print("| metric | D | fast path | fast (s) | generic (s, scaled) | speed-up |")
    print("|---|---|---|---|---|---|")
    warnings.simplefilter("ignore")
    for d in args.dims:
        x, y = make_pair(args.n, d)
        for name in args.metrics:
            has_fast = get_metric(name).null is not None
            generic = seconds(name, x, y, sample, fast=False) * k / sample
            fast = seconds(name, x, y, k, fast=True) if has_fast else generic
            print(
                f"| {name} | {d} | {'yes' if has_fast else 'no'} | {fast:.1f} | {generic:.1f} | "
                f"{generic / fast:.0f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
