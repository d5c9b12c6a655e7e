"""W&B tracking: a logger for ``stitching fit``, per-cell runs logged from the results store, the leaderboard
from W&B runs and sweep configs. W&B is never the only copy of a result (the tests read offline runs back
with ``tests/wandb_offline.py``)."""

from stitching.tracking._mode import has_api_key, resolve_mode, stable_run_id
from stitching.tracking.cells import (
    cell_run_id,
    log_cell_record,
    log_cells_to_wandb,
    log_leaderboard_run,
    record_to_run,
    suite_group,
)
from stitching.tracking.public import (
    leaderboard_from_wandb,
    leaderboard_wandb_main,
    record_from_run,
    records_from_wandb,
)
from stitching.tracking.sweep import sweep_config, sweep_main

_LAZY = {"StitchingWandbLogger", "default_run_id", "prepare_cli_logger"}


def __getattr__(name: str):
    # The logger pulls in Lightning (seconds to import); the other tools do not need it.
    if name in _LAZY:
        from stitching.tracking import logger

        return getattr(logger, name)
    raise AttributeError(f"module 'stitching.tracking' has no attribute {name!r}")


__all__ = [
    "StitchingWandbLogger",
    "cell_run_id",
    "default_run_id",
    "has_api_key",
    "leaderboard_from_wandb",
    "leaderboard_wandb_main",
    "log_cell_record",
    "log_cells_to_wandb",
    "log_leaderboard_run",
    "prepare_cli_logger",
    "record_from_run",
    "record_to_run",
    "records_from_wandb",
    "resolve_mode",
    "stable_run_id",
    "suite_group",
    "sweep_config",
    "sweep_main",
]
