"""One W&B run per cell record, then a leaderboard run per suite: logged from the results store, after the
fact, so W&B is never the only copy of a result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from stitching.bench.store import ResultStore
from stitching.tracking._mode import project_name, resolve_mode, slug

#: Summary keys that are not metrics; every metric is listed in ``higher_is_better``.
RECORD_FIELDS = ("adapter_params", "timings", "higher_is_better", "versions", "git_commit", "created", "host")


def suite_group(suite: dict[str, Any]) -> str:
    """The W&B group of a suite's runs: ``<name>-v<version>``."""
    return f"{suite['name']}-v{suite['version']}"


def cell_run_id(record: dict[str, Any]) -> str:
    """Stable run id of a cell: suite slug + version + cell id, so re-logging updates the same run."""
    suite = record["suite"]
    return f"{slug(suite['name'], 24)}-v{slug(suite['version'], 8)}-{record['cell_id']}"


def leaderboard_run_id(suite: dict[str, Any]) -> str:
    return f"{slug(suite['name'], 24)}-v{slug(suite['version'], 8)}-leaderboard"


def cell_tags(config: dict[str, Any]) -> list[str]:
    """Tags for filtering in the W&B UI: the model pair, its kind, the cuts and the init."""
    src, tgt = config["source"], config["target"]
    tags = [
        f"source:{src['key']}",
        f"target:{tgt['key']}",
        f"pair:{src['key']}->{tgt['key']}",
        config.get("pair_kind", ""),
        f"source_cut:{config['source_cut']}",
        f"target_cut:{config['target_cut']}",
        f"init:{config.get('init', '')}",
    ]
    return [t[:64] for t in tags if t]  # W&B caps tags at 64 characters


def cell_run_name(config: dict[str, Any]) -> str:
    src, tgt = config["source"], config["target"]
    return (
        f"{src['key']}/{src['seed']}:{config['source_cut']} -> {tgt['key']}/{tgt['seed']}:"
        f"{config['target_cut']} {config.get('init', '')} s{config.get('stitch_seed', 0)}"
    )


def record_to_run(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, summary) of a cell run: the cell config plus ``cell_id`` and ``suite``; the metrics at the top
    level of the summary, next to the record's other fields."""
    config = {**record["config"], "cell_id": record["cell_id"], "suite": record["suite"]}
    summary = dict(record["metrics"])
    summary.update({k: record[k] for k in RECORD_FIELDS if k in record})
    return config, summary


def log_cell_record(
    record: dict[str, Any],
    project: str | None = None,
    entity: str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike | None = None,
) -> str:
    """Log one cell record as one finished W&B run and return its path.

    Under a W&B sweep agent (``WANDB_SWEEP_ID`` set) the agent's run id is used instead of the stable id.
    """
    import wandb

    config, summary = record_to_run(record)
    in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
    run = wandb.init(
        project=project_name(project),
        entity=entity,
        mode=resolve_mode(mode),
        dir=dir,
        id=None if in_sweep else cell_run_id(record),
        resume="allow",
        name=cell_run_name(record["config"]),
        group=suite_group(record["suite"]),
        job_type="cell",
        tags=cell_tags(record["config"]),
        config=config,
        settings=_quiet_settings(),
        reinit="create_new",
    )
    try:
        run.config.update(config, allow_val_change=True)  # a resumed run keeps older values otherwise
        run.summary.update(summary)
        path = run.path
    finally:
        run.finish()
    return path


def log_cells_to_wandb(
    results_dir: str | os.PathLike,
    project: str | None = None,
    entity: str | None = None,
    mode: str | None = None,
    plots: bool = True,
    dir: str | os.PathLike | None = None,
) -> list[str]:
    """Log every cell record under ``results_dir`` as its own run, then one leaderboard run per suite
    (group ``<suite>-v<version>``, job type ``leaderboard``) holding the leaderboard ``wandb.Table`` and the
    plots. Returns the run paths, cells first. Ids are stable, so re-logging updates the same runs."""
    records = list(ResultStore(results_dir).records())
    if not records:
        raise FileNotFoundError(
            f"no cell records under {Path(results_dir) / 'cells'}; run `stitching bench` first"
        )
    paths = [log_cell_record(r, project, entity, mode, dir) for r in records]
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_suite.setdefault(suite_group(r["suite"]), []).append(r)
    for group_records in by_suite.values():
        paths.append(log_leaderboard_run(group_records, project, entity, mode, plots, dir))
    return paths


def log_leaderboard_run(
    records: list[dict[str, Any]],
    project: str | None = None,
    entity: str | None = None,
    mode: str | None = None,
    plots: bool = True,
    dir: str | os.PathLike | None = None,
) -> str:
    """Log the leaderboard of one suite's records (a ``wandb.Table`` under ``leaderboard``, the cell table
    under ``cells``) and its plots (``wandb.Image`` under ``plots/<name>``); return the run path."""
    import wandb

    from stitching.bench.leaderboard import leaderboard, records_to_frame

    suite = records[0]["suite"]
    frame = records_to_frame(records)
    table = leaderboard(frame)
    run = wandb.init(
        project=project_name(project),
        entity=entity,
        mode=resolve_mode(mode),
        dir=dir,
        id=leaderboard_run_id(suite),
        resume="allow",
        name=f"{suite_group(suite)} leaderboard",
        group=suite_group(suite),
        job_type="leaderboard",
        tags=["leaderboard"],
        config={"suite": suite, "cells": len(records)},
        settings=_quiet_settings(),
        reinit="create_new",
    )
    # Plots are drawn from this suite's records into a scratch dir that lives until the run is finished.
    with tempfile.TemporaryDirectory(prefix="stitching-plots-") as scratch:
        try:
            run.config.update({"suite": suite, "cells": len(records)}, allow_val_change=True)
            logged: dict[str, Any] = {
                "leaderboard": wandb.Table(dataframe=table),
                "cells": wandb.Table(dataframe=frame.sort_values("cell_id").reset_index(drop=True)),
            }
            if plots:
                from stitching.bench.plots import write_plots

                for name, png in write_plots(frame, scratch, table).items():
                    logged[f"plots/{name}"] = wandb.Image(str(png), caption=name)
            run.log(logged)
            path = run.path
        finally:
            run.finish()
    return path


def _quiet_settings():
    import wandb

    # No console capture, system stats or code/git snapshot: a cell run carries the record, nothing else.
    return wandb.Settings(
        console="off", x_disable_stats=True, disable_code=True, disable_git=True, silent=True
    )
