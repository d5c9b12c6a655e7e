"""The colour experiment's README: settings, the calibrated table and what the numbers say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stitching._utils import atomic_write


def _table(table: pd.DataFrame) -> list[str]:
    lines = [
        "| layer | metric | score | null mean | null95 | p | calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        layer = f"best = {row.layer} (max-null)" if row.kind != "layer" else str(row.layer)
        lines.append(
            f"| {layer} | {row.metric} | {row.score:.4f} | {row.null_mean:.4f} | {row.null95:.4f} | "
            f"{row.p:.4f} | {row.calibrated:.3f} |"
        )
    return lines


def verdict(table: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One sentence per metric on the best layer, calibrated against the max-over-layers null."""
    lines = []
    for row in table[table.kind != "layer"].itertuples():
        beyond = row.p < alpha
        lines.append(
            f"- **{row.metric}**: best hidden state {row.layer}, score {row.score:.4f} against a "
            f"max-over-layers null95 of {row.null95:.4f} (p = {row.p:.4f}, calibrated {row.calibrated:.3f}): "
            + ("aligned beyond chance." if beyond else "not distinguishable from chance.")
        )
    return lines


def meaning(table: pd.DataFrame) -> list[str]:
    """How much of the best layer's alignment the embedding layer (no context, token identity) has."""
    lines = []
    for row in table[table.kind != "layer"].itertuples():
        first = table[(table.kind == "layer") & (table.metric == row.metric) & (table.layer == 0)]
        share = float(first.score.iloc[0]) / row.score if row.score else float("nan")
        lines.append(
            f"- {row.metric}: the embedding layer alone scores {share:.0%} of the best layer's score."
        )
    return [
        "p is at its floor 1 / (K + 1) where no permutation reached the score. The calibrated score is "
        "(score - tau) / (1 - tau): 0 at chance, 1 for identical neighbourhoods or kernels.",
        "",
        *lines,
        "",
        'Colour names share words ("blue", "dark", "pale"), so the embedding layer already groups names '
        "by their colour words; alignment there is lexical. Alignment clearly above the embedding layer's "
        "would be what the network's context adds.",
    ]


def write_readme(path: Path, table: pd.DataFrame, info: dict[str, Any], label: str) -> None:
    """Write the generated README (numbers only; the interpretation is in the repository README)."""
    lines = [
        f"# Language meets perception: {label} vs CIELAB (generated)",
        "",
        f"n = {info['n']} XKCD colour names (matplotlib), pooling = {info['pooling']}, k = {info['topk']}, "
        f"{info['n_permutations']} permutations, seed {info['seed']}. Perceptual side: CIELAB (D65, "
        "colour-science), column-centred. Hidden state 0 is the embedding layer. Features "
        f"{info['features_s']:.1f} s, total {info['total_s']:.1f} s.",
        "",
        "## Best layer, calibrated against the null of the best over layers",
        "",
        *verdict(table),
        "",
        "## What it means",
        "",
        *meaning(table),
        "",
        "## Every layer",
        "",
        *_table(table),
        "",
        "![kernels](kernels.png)",
        "",
        "![alignment by layer](alignment_by_layer.png)",
        "",
    ]
    atomic_write(path, "\n".join(lines))
