"""Executors: run benchmark cells in this process, in N local processes, or as SLURM job arrays.

executor = executor_from_args(args)            # after add_executor_arguments(parser)
report = executor.run(cells, partial(run_cell, store_dir=store), wait=not args.no_wait,
                      group_key=..., workdir=results_dir)
report.raise_on_error()
"""

from .args import add_executor_arguments, executor_from_args, slurm_options_from_args
from .base import CellBatch, CellsFailed, Executor, RunReport, cell_id, group_cells
from .local import InlineExecutor, LocalExecutor
from .options import SlurmOptions, list_presets, load_slurm_options
from .slurm import SlurmExecutor, in_submitit_slurm_job, job_status, lightning_plugins_for_slurm

__all__ = [
    "CellBatch",
    "CellsFailed",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "RunReport",
    "SlurmExecutor",
    "SlurmOptions",
    "add_executor_arguments",
    "cell_id",
    "executor_from_args",
    "group_cells",
    "in_submitit_slurm_job",
    "job_status",
    "lightning_plugins_for_slurm",
    "list_presets",
    "load_slurm_options",
    "slurm_options_from_args",
]
