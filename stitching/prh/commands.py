"""``stitching align SUITE.yaml [--dry-run] [--results DIR] [--device D] [--threads T]``."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stitching align",
        description="Alignment of many models at every layer pair (Platonic Representation Hypothesis), "
        "calibrated against the null of the best layer pair.",
    )
    parser.add_argument("suite", help="alignment suite YAML (e.g. benchmarks/prh/digits_align.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="check the suite offline and print the plan")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def align_main(argv: list[str] | None = None) -> int:
    """Entry point of ``stitching align``; suite problems print as one list and exit 2."""
    args = _parser().parse_args(argv)
    if args.dry_run:
        os.environ["HF_HUB_OFFLINE"] = "1"  # a dry run never downloads
    import torch

    from stitching.bench.suite import SuiteError
    from stitching.prh._optional import MissingExtraError
    from stitching.prh.align_suite import check_suite, load_align_suite, plan

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        suite = load_align_suite(args.suite)
        n = check_suite(suite)
        print(plan(suite, n))
        if args.dry_run:
            print("dry run: the suite is valid; nothing was downloaded or extracted")
            return 0
        from stitching.prh.align_run import run_align_suite

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        started = time.perf_counter()
        out = run_align_suite(suite, args.results, device)
    except (SuiteError, FileNotFoundError, MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}/ in {time.perf_counter() - started:.1f} s")
    return 0
