"""The ``stitching`` command: ``fit|validate|test`` through LightningCLI, plus the harness's own subcommands.

``fit|validate|test`` run :class:`stitching.lightning_cli.StitchingCLI` with the data and module packages
imported, so short class names resolve in YAML too.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import stitching
import stitching.data
import stitching.modules
from stitching._utils import did_you_mean
from stitching.lightning_cli import RUNS_DIR, StitchingCLI, print_summary

__all__ = ["COMMANDS", "LIGHTNING_SUBCOMMANDS", "RUNS_DIR", "StitchingCLI", "main", "print_summary"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")


def _lazy(module: str, function: str) -> Callable[[list[str]], int | None]:
    def run(argv: list[str]) -> int | None:
        return getattr(importlib.import_module(module), function)(argv)

    return run


# Harness subcommands outside LightningCLI; each takes the remaining argv and returns an exit code.
# Imported on use so that `stitching fit` does not pay for the benchmark machinery.
COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "bench": _lazy("stitching.bench.commands", "bench_main"),
    "align": _lazy("stitching.prh.commands", "align_main"),
    "leaderboard": _lazy("stitching.bench.commands", "leaderboard_main"),
    "sweep": _lazy("stitching.tracking", "sweep_main"),
}


def _version() -> str:
    """The installed distribution's version (the source tree's when it is not installed)."""
    try:
        return version("stitching")
    except PackageNotFoundError:
        return stitching.__version__


def _usage() -> str:
    return "usage: stitching {" + ",".join((*LIGHTNING_SUBCOMMANDS, *COMMANDS)) + "} [options]"


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of the ``stitching`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["--version"], ["-V"]):
        print(f"stitching {_version()}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        print(
            "  fit|validate|test --config FILE   train or evaluate through LightningCLI (--help for options)"
        )
        print("  " + "|".join(COMMANDS) + "          benchmark harness commands")
        print("  --version                         print the installed version")
        return 0
    command, rest = args[0], args[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        with warnings.catch_warnings():
            # We pass args explicitly by design; LightningCLI would warn about sys.argv under pytest.
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
            StitchingCLI(args=args)
        return 0
    if command in COMMANDS:
        return COMMANDS[command](rest)
    valid = [*LIGHTNING_SUBCOMMANDS, *COMMANDS]
    hint = did_you_mean(command, valid)
    print(f"error: unknown subcommand {command!r}; {hint}valid: {', '.join(valid)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
