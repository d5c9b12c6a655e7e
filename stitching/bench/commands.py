"""``stitching bench`` and ``stitching leaderboard``: the benchmark's command-line entry points."""

from __future__ import annotations

import argparse
import os
import sys
from argparse import ArgumentError

import jsonargparse

from stitching._utils import did_you_mean
from stitching.bench.suite import SuiteError


def bench_parser() -> jsonargparse.ArgumentParser:
    """The parser of ``stitching bench``: its own flags, then ``--executor``/``--slurm.*`` and the
    ``--trainer.*``/``--speed.*`` dataclass groups (typed and checked by jsonargparse)."""
    from stitching.bench.runner import DEFAULT_SUITE
    from stitching.bench.runtime import add_runtime_arguments
    from stitching.launch import add_executor_arguments

    jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docs as help
    parser = jsonargparse.ArgumentParser(
        prog="stitching bench", description=bench_main.__doc__, exit_on_error=False, default_env=False
    )
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
    parser.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="ID",
        help="run only this cell id (repeatable); used by W&B sweep agents",
    )
    parser.add_argument(
        "--export-fit",
        action="append",
        default=[],
        metavar="ID",
        help="write the `stitching fit` config that re-runs this cell (repeatable) and exit",
    )
    parser.add_argument(
        "--export-dir", help="where --export-fit writes <ID>.yaml (default: RESULTS/<suite>/fit)"
    )
    parser.add_argument(
        "--wandb-project",
        metavar="[ENTITY/]PROJECT",
        help="afterwards, log a W&B run per cell and a leaderboard run (offline: no key)",
    )
    add_executor_arguments(parser)
    add_runtime_arguments(parser)
    from stitching.bench.cache import CacheSettings

    parser.add_class_arguments(CacheSettings, "cache")  # budgets the plan and the cells' caches obey
    return parser


def bench_main(argv: list[str]) -> int:
    """Run a suite (default: the digits suite), then write its leaderboard and plots."""
    from stitching.bench.grid import dataset_root_problems, load_and_expand
    from stitching.bench.leaderboard import write_leaderboard
    from stitching.bench.runner import run_suite
    from stitching.bench.runtime import runtime_from_args
    from stitching.launch import executor_from_args
    from stitching.launch.args import short_error

    parser = bench_parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentError as err:
        print(f"error: {short_error(parser, str(err))}", file=sys.stderr)
        return 2
    try:
        suite, cells = load_and_expand(args.suite)
        runtime = runtime_from_args(args)
        if args.executor != "slurm":  # cells run on this machine: its devices and data, once, before any cell
            runtime.check_here()
            missing = [] if args.dry_run else dataset_root_problems(suite)  # the plan says so, needs no data
            if missing:
                raise SuiteError(suite.source_path or suite.name, missing)
        if args.no_wait and args.executor != "slurm":
            raise ValueError(
                f"--no-wait returns after submitting cells to a cluster; --executor {args.executor} runs "
                "them here, so drop --no-wait (or use --executor slurm)"
            )
        executor = executor_from_args(args, runtime.devices, runtime.accelerator)
    except (SuiteError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.export_fit:
        return _export_fit(cells, args, runtime.accelerator)
    if args.cell:
        cells = _select_cells(cells, args.cell)
        if cells is None:
            return 2
    plan_ok = _plan(suite, cells, args)  # the cost before anything runs; stops a suite that cannot fit
    if args.dry_run or not plan_ok:
        return 0 if plan_ok else 2
    lead = True
    if runtime.distributed and args.executor == "inline":
        # DDP on this machine: the command starts once more per extra device; all ranks run the same
        # cells in step, and rank 0 alone reports, writes records and builds the leaderboard
        lead = runtime.is_global_zero()
        if not lead:
            executor.progress = False
            sys.stdout = open(os.devnull, "w")  # for the rest of this process
    summary = run_suite(
        suite, args.results, executor=executor, wait=not args.no_wait, cells=cells, runtime=runtime
    )
    if not lead:
        return 1 if summary["failed"] else 0
    print(
        f"{summary['finished']}/{summary['cells']} cells finished in {summary['seconds']:.0f} s "
        f"-> {summary['results_dir']}"
    )
    for cell_id, error in summary["failed"].items():
        print(f"cell {cell_id} failed:\n{error}", file=sys.stderr)
    if summary["pending"]:
        print(f"{len(summary['pending'])} cells still queued or running; re-run the same command to collect")
    if args.cell and os.environ.get("WANDB_SWEEP_ID"):  # a W&B sweep agent's run: log this cell to it
        from stitching.bench.store import ResultStore
        from stitching.tracking import log_cell_record

        store = ResultStore(summary["results_dir"])
        for cell in cells:
            log_cell_record(store.read(cell.cell_id))
        return 1 if summary["failed"] else 0
    if not args.no_leaderboard and summary["finished"]:
        for name, path in write_leaderboard(summary["results_dir"]).items():
            print(f"{name:<24} {path}")
    if args.wandb_project:
        from stitching.tracking import log_cells_to_wandb

        entity, _, project = args.wandb_project.rpartition("/")
        runs = log_cells_to_wandb(summary["results_dir"], project=project, entity=entity or None)
        print(f"logged {len(runs)} W&B runs to {args.wandb_project}")
    return 1 if summary["failed"] else 0


def _plan(suite, cells: list, args) -> bool:
    """Print the plan (with ``--dry-run``) or its problems; hand the cache settings to the cells' processes.
    False when the suite does not fit its budgets."""
    from dataclasses import replace

    from stitching.bench.cache import CacheSettings
    from stitching.bench.plan import format_plan, gather
    from stitching.bench.runner import results_dir_for

    settings = CacheSettings(**args.cache.as_dict())
    os.environ.update(replace(settings, path=settings.path or suite.activations.path).to_env())
    try:
        plan = gather(suite, cells, settings, results_dir_for(suite, args.results))
    except Exception as err:  # the plan informs; a model it cannot size fails in its cell as before
        print(f"plan: not available ({type(err).__name__}: {err})", file=sys.stderr)
        plan = None
    if args.dry_run:
        print(format_plan(plan) if plan else "", f"{len(cells)} cells", sep="\n")
    elif plan and plan.problems:
        print(format_plan(plan), file=sys.stderr)
    return not (plan and plan.problems)


def _export_fit(cells: list, args, accelerator: str) -> int:
    """Write the ``stitching fit`` config of each cell named by ``--export-fit``."""
    from pathlib import Path

    from stitching.bench.export import export_fit

    chosen = _select_cells(cells, args.export_fit)
    if chosen is None:
        return 2
    out_dir = Path(args.export_dir or Path(args.results) / chosen[0].suite.name / "fit")
    for cell in chosen:
        path = export_fit(cell, out_dir / f"{cell.cell_id}.yaml", accelerator)
        print(f"{cell.describe()}\n  stitching fit --config {path}")
    return 0


def _select_cells(cells: list[dict], wanted: list[str]) -> list[dict] | None:
    by_id = {c.cell_id: c for c in cells}
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        for w in unknown:
            hint = did_you_mean(w, by_id)
            print(f"error: no cell {w!r} in this suite; {hint}list them with --dry-run", file=sys.stderr)
        return None
    return [by_id[w] for w in wanted]


def leaderboard_main(argv: list[str]) -> int:
    """Build the CSV/Markdown leaderboard and plots of a results directory from its cell records."""
    from stitching.bench.leaderboard import write_leaderboard

    parser = argparse.ArgumentParser(prog="stitching leaderboard", description=leaderboard_main.__doc__)
    parser.add_argument("results_dir", nargs="?", help="a suite's results directory, e.g. results/digits")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="build the leaderboard from W&B cell runs instead of a local results directory",
    )
    parser.add_argument("--group", help="with --wandb: a suite name (all versions) or SUITE-vVERSION")
    args = parser.parse_args(argv)
    if args.wandb:
        from stitching.tracking import leaderboard_wandb_main

        return leaderboard_wandb_main([args.wandb] + (["--group", args.group] if args.group else []))
    if not args.results_dir:
        parser.error("give a results directory (e.g. results/digits) or --wandb ENTITY/PROJECT")
    try:
        paths = write_leaderboard(args.results_dir, plots=not args.no_plots)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:<24} {path}")
    return 0
