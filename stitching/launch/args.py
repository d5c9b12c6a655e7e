"""Command-line wiring: ``add_executor_arguments(parser)`` then ``executor_from_args(args)``."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from .base import Executor
from .local import InlineExecutor, LocalExecutor
from .options import SlurmOptions, list_presets, load_slurm_options
from .slurm import SlurmExecutor

EXECUTORS = ("inline", "local", "slurm")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. constraint=volta32gb), got {text!r}")
    return key.lstrip("-"), value


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor``, ``--workers``, ``--no-wait``, ``--slurm.preset`` and one ``--slurm.<option>`` per
    `SlurmOptions` field (dest ``slurm_<option>``; unset flags leave the preset's value)."""
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="inline",
        help="where cells run: in this process, in N local processes, or as SLURM jobs",
    )
    group.add_argument("--workers", type=int, default=2, help="processes for --executor local")
    if "--no-wait" not in parser._option_string_actions:  # the caller may already define it
        group.add_argument(
            "--no-wait",
            action="store_true",
            help="slurm: return after submitting; run again later to collect and resume",
        )
    group.add_argument(
        "--slurm.preset",
        dest="slurm_preset",
        default=None,
        help=f"YAML preset in configs/slurm/ ({', '.join(list_presets())}) or a path",
    )
    hints = typing.get_type_hints(SlurmOptions)
    for f in dataclasses.fields(SlurmOptions):
        flag, dest, kind = f"--slurm.{f.name}", f"slurm_{f.name}", hints[f.name]
        origin = typing.get_origin(kind)
        if origin is dict:
            group.add_argument(
                flag,
                dest=dest,
                type=_key_value,
                action="append",
                metavar="KEY=VALUE",
                help="extra sbatch flag (repeatable)",
            )
        elif origin is list:
            group.add_argument(
                flag,
                dest=dest,
                action="append",
                metavar="LINE",
                help="shell line before the job starts (repeatable)",
            )
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            group.add_argument(flag, dest=dest, type=base, default=None, metavar=base.__name__.upper())


def slurm_options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """`SlurmOptions` from ``--slurm.preset`` and the ``--slurm.<option>`` flags that were given."""
    overrides = {}
    for f in dataclasses.fields(SlurmOptions):
        value = getattr(args, f"slurm_{f.name}", None)
        if value is not None:
            overrides[f.name] = dict(value) if f.name == "additional_parameters" else value
    return load_slurm_options(getattr(args, "slurm_preset", None), **overrides)


def executor_from_args(args: argparse.Namespace, devices: int = 1, accelerator: str = "auto") -> Executor:
    """The executor chosen by ``--executor`` (run it with ``wait=not args.no_wait``).

    ``devices`` per cell (DDP): SLURM jobs get one task per device (and as many GPUs unless the accelerator
    is the CPU); the inline executor runs in the ranks the caller launched; local workers cannot share.
    """
    if args.executor == "slurm":
        options = slurm_options_from_args(args)
        if devices > 1:
            options = dataclasses.replace(options, tasks_per_node=devices)
            if accelerator in ("gpu", "cuda") and not options.gpus_per_node:
                options = dataclasses.replace(options, gpus_per_node=devices)
            if options.gpus_per_node not in (0, devices):
                raise ValueError(
                    f"--trainer.devices {devices} trains each cell on {devices} devices, one SLURM task "
                    f"each, but --slurm.gpus_per_node is {options.gpus_per_node}; give both the same number"
                )
        return SlurmExecutor(options)
    if devices > 1 and args.executor == "local":
        raise ValueError(
            f"--trainer.devices {devices} needs one process per device for each cell; --executor local runs "
            "independent one-device workers. Use --executor inline (DDP on this machine) or slurm"
        )
    if args.executor == "local":
        return LocalExecutor(workers=args.workers)
    return InlineExecutor()
