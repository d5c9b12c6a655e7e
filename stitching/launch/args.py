"""Command-line wiring: ``add_executor_arguments(parser)`` then ``executor_from_args(args)``.

The parser is a ``jsonargparse.ArgumentParser``: ``--slurm.<option>`` flags come from the `SlurmOptions`
dataclass and are type-checked by jsonargparse; ``short_error`` turns its errors into one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from stitching._utils import did_you_mean

from .base import Executor
from .local import InlineExecutor, LocalExecutor
from .options import SlurmOptions, list_presets, load_slurm_options
from .slurm import SlurmExecutor

EXECUTORS = ("inline", "local", "slurm")
_REPEATED = ("additional_parameters", "setup")  # repeatable flags, merged into the preset's values


class _KeyValue(argparse.Action):
    """``--flag KEY=VALUE`` (repeatable) collected into a dict."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        key, sep, value = str(values).partition("=")
        if not sep or not key.lstrip("-"):
            example = "e.g. constraint=volta32gb"
            raise argparse.ArgumentError(self, f"expected KEY=VALUE ({example}), got {values!r}")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), key.lstrip("-"): value})


def add_executor_arguments(parser: ArgumentParser) -> None:
    """Add ``--executor``, ``--workers``, ``--no-wait``, ``--slurm.preset`` and a ``--slurm.<option>`` per
    `SlurmOptions` field; an unset ``--slurm.<option>`` leaves the preset's value."""
    if not isinstance(parser, ArgumentParser):
        raise TypeError("add_executor_arguments needs a jsonargparse.ArgumentParser")
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
            "--no-wait", action="store_true", help="slurm: return after submitting; run again to collect"
        )
    parser.add_class_arguments(SlurmOptions, "slurm", skip=set(_REPEATED))
    for action in parser._actions:
        if action.dest.startswith("slurm."):
            action.default = None  # "not given": the preset (or SlurmOptions) decides
    parser.add_argument(
        "--slurm.preset",
        dest="slurm_preset",
        help=f"YAML preset in configs/slurm/ ({', '.join(list_presets())}) or a path",
    )
    parser.add_argument(
        "--slurm.additional_parameters",
        dest="slurm_additional_parameters",
        action=_KeyValue,
        metavar="KEY=VALUE",
        help="extra sbatch flag (repeatable)",
    )
    parser.add_argument(
        "--slurm.setup",
        dest="slurm_setup",
        action="append",
        metavar="LINE",
        help="shell line before the job starts (repeatable)",
    )


def slurm_options_from_args(args: Namespace) -> SlurmOptions:
    """`SlurmOptions` from ``--slurm.preset`` and the ``--slurm.<option>`` flags that were given."""
    given = args.get("slurm")
    overrides = {k: v for k, v in (given.as_dict() if given else {}).items() if v is not None}
    for name in _REPEATED:
        value = args.get(f"slurm_{name}")
        if value is not None:
            overrides[name] = dict(value) if name == "additional_parameters" else list(value)
    return load_slurm_options(args.get("slurm_preset"), **overrides)


def executor_from_args(args: Namespace, devices: int = 1, accelerator: str = "auto") -> Executor:
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


def short_error(parser: ArgumentParser, message: str) -> str:
    """One line for a jsonargparse error: ``--speed.compile: expected on or off, got 'maybe'``."""
    match = re.match(r'Parser key "([^"]+)":', message)
    if not match:
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        hint = did_you_mean(unknown.group(1), parser._option_string_actions) if unknown else ""
        return " ".join(message.split()) + (f" ({hint.strip()})" if hint else "")
    key = match.group(1)
    got = re.search(r"(?:Got value|Given value): (.*)", message)
    action = next((a for a in parser._actions if a.dest == key), None)
    hint = getattr(action, "_typehint", None)
    expected = describe_flag_type(hint) if hint is not None else "a valid value"
    return f"--{key}: expected {expected}, got {got.group(1).strip()!r}" if got else f"--{key}: {expected}"


def describe_flag_type(hint: Any) -> str:
    """How a flag's value is written: ``on or off``, ``one of '32', 'bf16'``, ``int``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is bool:
        return "on or off"
    if args and type(None) in args:
        inner = [describe_flag_type(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if hint is not bool else "")
    return getattr(hint, "__name__", str(hint))
