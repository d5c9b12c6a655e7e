"""The README of a competence-suite run: settings, the numbers, and sentences that follow them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stitching.prh.competence import CompetenceSuite

ALPHA = 0.05


def _verdict(row: Any, what: str) -> str:
    if row.p >= ALPHA:
        return f"{what}: not distinguishable from noise (p = {row.p:.3g})"
    direction = "higher" if row.difference > 0 else "lower"
    return f"{what}: {direction} with competence (p = {row.p:.3g})"


def _settings(suite: CompetenceSuite, result: Any) -> list[str]:
    a, b, s = suite.alignment, suite.battery, suite.stitching
    families = ", ".join(f"`{e.name}` epochs {e.epochs}" for e in suite.models.values())
    seeds = sorted({seed for e in suite.models.values() for seed in e.seeds})
    n = next(iter(result.alignment.pairs.values())).n if result.alignment.pairs else 0
    t = result.timings
    phases = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items() if k != "total_s")
    return [
        f"- Models: {families}; seeds {seeds}: {len(result.models)} models. A level is a training budget: "
        "each "
        "model is a full run of its family's base-training config with `trainer.max_epochs` set to the "
        "level's "
        "epochs (its own cosine schedule), trained into the model store (`train_configs/`).",
        f"- Competence: test accuracy, and a battery of {len(b.tasks)} linear-probe tasks on the frozen "
        "final "
        f"features (balanced test accuracy; solved at >= {b.threshold}): {', '.join(b.tasks)}.",
        f"- Alignment: {', '.join(a.metrics)} (k = {a.topk}), "
        f"{'PRH protocol (clip at the 0.95 quantile, L2 rows)' if a.prh_protocol else 'raw features'}, on "
        f"n = {n} {a.split} images, at cuts nearest depths {a.depths or 'all'}; every model pair's best "
        "layer "
        f"pair calibrated against the null of the max over layer pairs ({a.permutations} permutations; p >= "
        f"{1 / (a.permutations + 1):.3f}).",
        f"- Stitching: depth {s.depth}, kinds {s.kinds}, recipe {s.recipe.epochs} epochs, lr {s.recipe.lr}, "
        f"{s.recipe.optimizer}, adapter {s.adapter} with `lstsq` initialisation (bench records in "
        "`stitching/`).",
        f"- Time of this run: {t.get('total_s', 0):.0f} s ({phases}); models already in the store are not "
        f"trained again. Training all {len(result.models)} models took "
        f"{result.models.train_seconds.sum():.0f} s in all (the store's records; machine load not recorded).",
    ]


def _level_table(summary: dict[str, pd.DataFrame], metrics: list[str]) -> list[str]:
    levels, models = summary["levels"], summary["models"]
    head = "| level | epochs (per family) | test acc, mean [min, max] | tasks solved, mean [min, max] | "
    head += " | ".join(f"{m} within level [95% CI]" for m in metrics) + " |"
    lines = [head, "|" + "---|" * (4 + len(metrics))]
    for level, sub in models.groupby("level"):
        epochs = "/".join(str(e) for e in sub.groupby("family", sort=False).epochs.first())
        acc, solved = sub.test_acc, sub.tasks_solved
        cells = [
            f"{level}",
            epochs,
            f"{acc.mean():.3f} [{acc.min():.3f}, {acc.max():.3f}]",
            f"{solved.mean():.1f} [{solved.min()}, {solved.max()}]",
        ]
        for metric in metrics:
            row = levels[(levels.metric == metric) & (levels.bin == level)].iloc[0]
            cells.append(f"{row['mean']:.3f} [{row.low:.3f}, {row.high:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _tests(summary: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["| metric | test | estimate | 95% CI | p |", "|---|---|---:|---|---:|"]
    for row in summary["tests"].itertuples():
        ci = f"[{row.low:.3f}, {row.high:.3f}]" if pd.notna(getattr(row, "low", None)) else ""
        lines.append(f"| {row.metric} | {row.test} | {row.difference:.3f} | {ci} | {row.p:.3g} |")
    return lines


def _findings(summary: dict[str, pd.DataFrame]) -> list[str]:
    out = []
    for row in summary["tests"].itertuples():
        low, high = getattr(row, "low", float("nan")), getattr(row, "high", float("nan"))
        line = f"- {row.metric}, {_verdict(row, row.test)}; estimate {row.difference:.3f}"
        if row.p < ALPHA and pd.notna(low) and low <= 0 <= high:
            line += (
                f", but its 95% bootstrap interval over models, [{low:.3f}, {high:.3f}], contains 0: "
                "suggestive, not established"
            )
        out.append(line + ".")
    return out


def _stitching(result: Any, tests: pd.DataFrame) -> list[str]:
    cells = result.stitching
    if cells.empty:
        return ["Stitching was switched off."]
    lines = [
        "| level | kind | cells | pair test acc | penalty (points), mean [min, max] | lstsq penalty, mean |",
        "|---|---|---:|---:|---|---:|",
    ]
    for (level, kind), sub in cells.groupby(["level", "pair_kind"]):
        p, ls = sub.penalty * 100, (sub.target_acc - sub.lstsq_acc) * 100
        lines.append(f"| {level} | {kind} | {len(sub)} | {sub.pair_competence.mean():.3f} | {p.mean():.1f} "
                     f"[{p.min():.1f}, {p.max():.1f}] | {ls.mean():.1f} |")  # fmt: skip
    excluded = int(((cells.penalty_low > 0) | (cells.penalty_high < 0)).sum())
    note = (
        f"{excluded} of {len(cells)} cells have a penalty interval (95%, paired bootstrap over test images)"
    )
    lines += [
        "",
        note + " that excludes 0. A penalty is bounded by the target's accuracy above chance: a target near "
        "chance has little to lose, and an adapter trained for the task can even beat it (negative "
        "penalties), so penalties of weak pairs are small for a reason that is not alignment.",
        "",
    ]
    for row in tests.itertuples():
        verdict = (
            "not distinguishable from noise" if row.p >= ALPHA else ("falls" if row.rho < 0 else "rises")
        )
        lines.append(
            f"- {row.value} vs pair competence ({row.kind}, n = {row.n}): Spearman rho = {row.rho:.2f}, "
            f"p = {row.p:.3g}: {verdict}."
        )
    return lines


def readme(
    suite: CompetenceSuite, summary: dict[str, pd.DataFrame], result: Any, stitch_tests: pd.DataFrame
) -> str:
    """The whole README text."""
    metrics = list(suite.alignment.metrics)
    lines = [
        f"# Convergence with competence: `{suite.name}`",
        "",
        "Are more competent models more aligned with each other (the PRH paper's \"all strong models are "
        'alike"), and do they stitch at a smaller cost? Generated by '
        "`python -m stitching.prh.competence_experiment`; every number below is in the CSVs here.",
        "",
        "## Settings",
        "",
        *_settings(suite, result),
        "",
        "## Competence and alignment by level",
        "",
        *_level_table(summary, metrics),
        "",
        "Within-level alignment is the mean calibrated alignment over the pairs of models of one level (both "
        "seeds of every family); its interval resamples the level's models. Calibrated = "
        "clamp((score - tau) / (1 - tau), 0, 1) with tau the 95% point of the max-over-layer-pairs null.",
        "",
        "![alignment vs competence](alignment_vs_competence.png)",
        "",
        "## Tests",
        "",
        *_tests(summary),
        "",
        "The level difference's interval resamples models within each level (bootstrap, 2,000 draws); its "
        "p-value "
        "swaps level labels between the two levels' models within each family (2,000 permutations). The rank "
        "correlations use each model's mean calibrated alignment with all others and permute competence "
        "within each family (10,000 permutations), so differences between families do not count as a "
        "competence effect. Pairs share models: no test here treats pairs as independent.",
        "",
        *_findings(summary),
        "",
        "![embedding](embedding.png)",
        "",
        "## Stitching against the competence of the pair",
        "",
        *_stitching(result, stitch_tests),
        "",
        "![stitching](stitching_vs_competence.png)" if not result.stitching.empty else "",
        "",
        "## Files",
        "",
        "`models.csv` (competence and mean alignment per model), `probes.csv` (balanced probe accuracy per "
        "task), "
        "`levels.csv`, `tests.csv`, `alignment/` (per metric the N x N best-layer, calibrated and p-value "
        "matrices as CSV and heatmap, models ordered by level; `pairs.csv`: every pair's best layer pair; "
        "`layers.csv`: every layer pair), `stitching.csv` and `stitching_tests.csv`, `stitching/` (bench "
        "records), "
        "`train_configs/` (the levels' training configs).",
        "",
    ]
    return "\n".join(lines)
