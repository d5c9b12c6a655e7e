"""The leaderboard from W&B runs (public API): suites run on different machines, compared in one table."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import pandas as pd

from stitching._utils import atomic_path
from stitching.tracking.cells import RECORD_FIELDS


def record_from_run(config: dict[str, Any], summary: dict[str, Any], run_id: str = "?") -> dict[str, Any]:
    """Rebuild a cell record from a cell run's config and summary (the inverse of ``record_to_run``)."""
    config = {k: v for k, v in config.items() if not k.startswith("_wandb")}
    missing = [k for k in ("cell_id", "suite") if k not in config] + [
        k for k in ("higher_is_better", "timings") if k not in summary
    ]
    if missing:
        raise ValueError(
            f"W&B run {run_id} is not a stitching cell run (missing {', '.join(missing)}); "
            "log cells with `log_cells_to_wandb` or filter on job_type 'cell'"
        )
    cell_id, suite = config.pop("cell_id"), config.pop("suite")
    directions = dict(summary["higher_is_better"])
    return {
        "cell_id": cell_id,
        "suite": dict(suite),
        "config": config,
        # W&B stores NaN as null; a metric is a float, so null comes back as NaN.
        "metrics": {k: math.nan if summary[k] is None else summary[k] for k in directions if k in summary},
        **{k: summary[k] for k in RECORD_FIELDS if k in summary},
    }


def records_from_wandb(path: str, group: str | None = None, api: Any = None) -> list[dict[str, Any]]:
    """Cell records of every ``job_type == "cell"`` run in ``ENTITY/PROJECT``.

    ``group`` selects one suite: either a W&B group (``digits-v1``) or a suite name (``digits``, all
    versions). ``api`` defaults to ``wandb.Api()``; tests pass a stand-in.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    filters: dict[str, Any] = {"jobType": "cell"}
    records = []
    for run in api.runs(path, filters=filters):
        if getattr(run, "job_type", "cell") != "cell":
            continue
        record = record_from_run(dict(run.config), _plain(run.summary_metrics), getattr(run, "id", "?"))
        if group is None or group in (run.group, record["suite"]["name"]):
            records.append(record)
    # The same cell logged twice (two projects merged, a re-run) is one cell: keep the newest record.
    newest = {}
    for r in sorted(records, key=lambda r: r.get("created") or ""):
        newest[r["cell_id"]] = r
    return [newest[k] for k in sorted(newest)]


def leaderboard_from_wandb(path: str, group: str | None = None, api: Any = None) -> pd.DataFrame:
    """The leaderboard of ``stitching.bench.leaderboard``, built from W&B cell runs, not a local store."""
    from stitching.bench.leaderboard import leaderboard, records_to_frame

    records = records_from_wandb(path, group, api)
    if not records:
        where = f"{path} (group {group!r})" if group else path
        raise LookupError(
            f"no stitching cell runs in W&B project {where}; log some with `log_cells_to_wandb`"
        )
    return leaderboard(records_to_frame(records))


def leaderboard_wandb_main(argv: list[str]) -> int:
    """``stitching leaderboard --wandb ENTITY/PROJECT [--group SUITE] [--out CSV]``: print the Markdown
    leaderboard of the W&B cell runs (and write it as CSV)."""
    from stitching.bench.leaderboard import to_markdown

    parser = argparse.ArgumentParser(prog="stitching leaderboard --wandb", description=__doc__)
    parser.add_argument("wandb", metavar="ENTITY/PROJECT")
    parser.add_argument("--group", help="a suite name (all versions) or a W&B group such as digits-v1")
    parser.add_argument("--out", help="also write the leaderboard as CSV to this file")
    args = parser.parse_args(argv)
    if args.wandb.count("/") != 1:
        parser.error(f"--wandb takes ENTITY/PROJECT, got {args.wandb!r}")
    try:
        table = leaderboard_from_wandb(args.wandb, args.group)
    except (LookupError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
    print(to_markdown(table, f"Leaderboard: {args.wandb}" + (f" ({args.group})" if args.group else "")))
    return 0


def _plain(value: Any) -> Any:
    """Summary values as plain dicts (the public API hands back nested summary objects)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value
