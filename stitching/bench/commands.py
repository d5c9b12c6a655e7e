"""``stitching bench`` and ``stitching leaderboard``: the benchmark's command-line entry points."""

from __future__ import annotations

import argparse
import sys

from stitching.bench.suite import SuiteError


def bench_main(argv: list[str]) -> int:
    """Run a suite (default: the digits suite), then write its leaderboard and plots."""
    from stitching.bench.grid import expand_suite
    from stitching.bench.leaderboard import write_leaderboard
    from stitching.bench.runner import DEFAULT_SUITE, run_suite
    from stitching.bench.suite import load_suite
    from stitching.launch import add_executor_arguments, executor_from_args

    parser = argparse.ArgumentParser(prog="stitching bench", description=bench_main.__doc__)
    parser.add_argument(
        "suite", nargs="?", default=str(DEFAULT_SUITE), help="suite YAML (default: benchmarks/digits.yaml)"
    )
    parser.add_argument("--results", default="results", help="results root; records go to RESULTS/<suite>/")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="cluster executors: return after submitting; re-run to collect and resume",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and list the cells, run nothing")
    parser.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard and plots")
    add_executor_arguments(parser)
    args = parser.parse_args(argv)
    try:
        suite = load_suite(args.suite)
        cells = expand_suite(suite)
    except (SuiteError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for cell in cells:
            c = cell["config"]
            print(
                f"{cell['cell_id']}  {c['source']['key']}/{c['source']['seed']}:{c['source_cut']} -> "
                f"{c['target']['key']}/{c['target']['seed']}:{c['target_cut']}  {c['init']}"
            )
        print(f"{len(cells)} cells")
        return 0
    summary = run_suite(suite, args.results, executor=executor_from_args(args), wait=not args.no_wait)
    print(
        f"{summary['finished']}/{summary['cells']} cells finished in {summary['seconds']:.0f} s "
        f"-> {summary['results_dir']}"
    )
    for cell_id, error in summary["failed"].items():
        print(f"cell {cell_id} failed:\n{error}", file=sys.stderr)
    if summary["pending"]:
        print(f"{len(summary['pending'])} cells still queued or running; re-run the same command to collect")
    if not args.no_leaderboard and summary["finished"]:
        for name, path in write_leaderboard(summary["results_dir"]).items():
            print(f"{name:<24} {path}")
    return 1 if summary["failed"] else 0


def leaderboard_main(argv: list[str]) -> int:
    """Build the CSV/Markdown leaderboard and plots of a results directory from its cell records."""
    from stitching.bench.leaderboard import write_leaderboard

    parser = argparse.ArgumentParser(prog="stitching leaderboard", description=leaderboard_main.__doc__)
    parser.add_argument("results_dir", help="a suite's results directory, e.g. results/digits")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = write_leaderboard(args.results_dir, plots=not args.no_plots)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:<24} {path}")
    return 0
