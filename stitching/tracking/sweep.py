"""``stitching sweep SUITE``: a W&B sweep (grid method) whose agent runs one benchmark cell per run.

The agent substitutes whole-token macros only (``${args}``, ``${env}``, ...; see
``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``): a token such as ``${cell_id}`` would be
dropped, not filled in. So the one grid parameter is named ``cell`` and passed by ``${args}`` as
``--cell=<cell_id>``: the agent's command is ``stitching bench SUITE --results DIR --cell=<cell_id>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stitching.bench.cell_config import Cell

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from stitching._utils import atomic_write

PARAMETER = "cell"


def sweep_config(
    suite_path: str | Path,
    cells: list[Cell],
    results: str = "results",
    metric: str = "penalty",
) -> dict[str, Any]:
    """A W&B sweep configuration: grid over the suite's cell ids, one ``stitching bench --cell`` per run."""
    if not cells:
        raise ValueError(f"suite {suite_path} expands to no cells; nothing to sweep")
    suite = cells[0].suite
    return {
        "name": f"{suite.name}-v{suite.version}",
        "description": f"stitching benchmark {suite.name} v{suite.version}: one cell per agent run",
        "program": "stitching",
        "method": "grid",
        "metric": {"name": metric, "goal": "minimize"},
        "parameters": {PARAMETER: {"values": [c.cell_id for c in cells]}},
        "command": ["${env}", "stitching", "bench", str(suite_path), "--results", results, "${args}"],
    }


def sweep_main(argv: list[str]) -> int:
    """Write the W&B sweep YAML of a suite; then `wandb sweep FILE` and `wandb agent SWEEP_ID` run it."""
    from stitching.bench.grid import expand_suite
    from stitching.bench.suite import SuiteError, load_suite

    parser = argparse.ArgumentParser(prog="stitching sweep", description=sweep_main.__doc__)
    parser.add_argument("suite", help="suite YAML, e.g. benchmarks/digits.yaml")
    parser.add_argument("--out", help="sweep YAML to write (default: print to stdout)")
    parser.add_argument("--results", default="results", help="results root the agents write records to")
    args = parser.parse_args(argv)
    try:
        cells = expand_suite(load_suite(args.suite))
        config = sweep_config(args.suite, cells, results=args.results)
    except (SuiteError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(config, sort_keys=False)
    if args.out:
        atomic_write(args.out, text)
        print(
            f"{len(cells)} cells -> {args.out}; run `wandb sweep {args.out}`, then `wandb agent <SWEEP_ID>`"
        )
    else:
        print(text, end="")
    return 0
