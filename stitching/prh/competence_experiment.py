"""``python -m stitching.prh.competence_experiment [SUITE]``: are more competent models more aligned?

Trains the suite's families at each competence level (through the model store), measures competence (test
accuracy, a battery of linear-probe tasks), aligns every model pair with calibrated metrics, stitches pairs
at a matched depth, and writes CSVs, figures and a README
(default suite: benchmarks/prh/digits_competence.yaml).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from stitching.prh.competence import DEFAULT_SUITE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stitching.prh.competence_experiment", description=__doc__
    )
    parser.add_argument("suite", nargs="?", default=str(DEFAULT_SUITE), help="competence suite YAML")
    parser.add_argument("--out", default=None, help="output directory (default: results/<suite name>)")
    parser.add_argument("--dry-run", action="store_true", help="check the suite and list the models only")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for training, probes and "
        "stitching (default: torch's); the alignment permutations always run on one",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Check the suite, then run it (or list its models with ``--dry-run``)."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stitching.bench.suite import SuiteError
    from stitching.prh.competence import load_competence_suite, model_specs

    try:
        suite = load_competence_suite(args.suite)
    except (SuiteError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 2
    out = args.out or os.path.join("results", suite.name)
    if args.dry_run:
        for spec in model_specs(suite, os.path.join(out, "train_configs")):
            print(f"{spec.key}: {spec.name} seed {spec.seed}, level {spec.level} ({spec.epochs} epochs)")
        return 0
    import torch

    from stitching.prh.competence_run import run_competence

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = run_competence(suite, out)
    print(result.models[["model", "test_acc", "tasks_solved"]].to_string(index=False))
    print(f"wrote {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
