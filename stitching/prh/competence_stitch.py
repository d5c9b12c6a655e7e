"""Stitching in the competence suite: a bench suite at one matched depth, generated from the competence
suite, run by the ordinary bench machinery (``stitching.bench.runner.run_suite``), and its records joined to
the competence of each pair's two models."""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from stitching.bench.suite import Suite, suite_from_dict
from stitching.prh.competence import CompetenceSuite, ModelSpec

STITCH_SUITE = "stitching"
"""The generated bench suite's name: its records go to ``<out>/stitching/``."""


def stitch_suite(suite: CompetenceSuite, specs: list[ModelSpec]) -> Suite:
    """The bench suite of the stitching part: per level, every unordered pair of families (first seeds, in
    the order the suite lists them) and/or each family's first seed into its second, at ``stitching.depth``,
    without controls or alignment metrics (the alignment part scores every pair separately). Each model of
    the competence suite is one bench model, keyed as there (``<family>_e<epochs>_s<seed>``)."""
    s = suite.stitching
    models = {spec.key: {"name": spec.name, "train": spec.train, "seeds": [spec.seed]} for spec in specs}
    by_level: dict[tuple[str, int], list[ModelSpec]] = {}
    for spec in specs:
        by_level.setdefault((spec.family, spec.level), []).append(spec)
    explicit = []
    families = list(suite.models)
    for level in range(suite.n_levels):
        first = {f: by_level[(f, level)] for f in families}
        if "cross_family" in s.kinds:
            explicit += [[first[a][0].key, first[b][0].key] for a, b in itertools.combinations(families, 2)]
        if "seed_pairs" in s.kinds:
            explicit += [[first[f][0].key, first[f][1].key] for f in families if len(first[f]) > 1]
    raw = {
        "name": STITCH_SUITE,
        "version": "1",
        "description": f"generated from the competence suite {suite.name!r}",
        "dataset": suite.dataset,
        "models": models,
        "pairs": {"mode": "explicit", "include_self": False, "cross_seeds": "first", "explicit": explicit},
        "cuts": {"depths": [s.depth], "mode": "matched"},
        "adapters": [s.adapter],
        "inits": ["lstsq"],
        "objectives": ["task"],
        "stitch_seeds": [0],
        "recipe": asdict(s.recipe),
        "controls": [],
        "metrics": [],
        "permutations": 1,
    }
    return suite_from_dict(raw, f"{suite.name} (stitching part)")


def run_stitching(suite: CompetenceSuite, specs: list[ModelSpec], out: str | Path) -> pd.DataFrame:
    """Run (or resume) the stitching cells into ``<out>/stitching/`` and return their table."""
    from stitching.bench.grid import expand_suite
    from stitching.bench.runner import run_suite

    bench = stitch_suite(suite, specs)
    cells = expand_suite(bench)
    summary = run_suite(bench, results_root=out, cells=cells)
    if summary["failed"]:
        raise RuntimeError(f"stitching cells failed: {summary['failed']}")
    return stitch_table(Path(out) / STITCH_SUITE, {c.cell_id for c in cells})


def stitch_table(store_dir: Path, cell_ids: set[str] | None = None) -> pd.DataFrame:
    """One row per stitched pair: the bench's cell columns plus the ``source_key``/``target_key`` of the
    competence suite's models (``<family>_e<epochs>_s<seed>``, the bench keys)."""
    from stitching.bench.leaderboard import records_to_frame
    from stitching.bench.store import ResultStore

    records = [r for r in ResultStore(store_dir).records() if cell_ids is None or r["cell_id"] in cell_ids]
    frame = records_to_frame(records)
    if frame.empty:
        return frame
    frame["source_key"], frame["target_key"] = frame.source, frame.target
    return frame


def join_competence(cells: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with each side's competence (``source_test_acc``, ``target_tasks_solved``, ...) and the
    pair's: the mean and the minimum of the two models' test accuracies, and the level (same for both)."""
    keep = ["level", "epochs", "family", "test_acc", "tasks_solved", "probe_mean"]
    table = models.set_index("model")[keep]
    out = cells.copy()
    for side in ("source", "target"):
        joined = table.loc[out[f"{side}_key"]].reset_index(drop=True)
        for col in keep:
            out[f"{side}_{col}"] = joined[col].to_numpy()
    out["pair_competence"] = (out.source_test_acc + out.target_test_acc) / 2
    out["pair_min_competence"] = out[["source_test_acc", "target_test_acc"]].min(axis=1)
    out["pair_tasks_solved"] = (out.source_tasks_solved + out.target_tasks_solved) / 2
    out["level"] = out.source_level
    return out
