"""Re-key a results directory after a change of cell *identity* that changes no computation.

When the cell id learns something new (a training config by content instead of by path; new config fields
whose defaults are what every earlier cell did), finished records keep their old ids and a re-run would
recompute them all. This script matches every record to the cell the current code expands from the suite,
comparing the record's config with the new config restricted to the keys the record has (so only the new
fields, at their defaults, may differ), and renames the record, its kept predictions and its reduced
features to the new ids. It refuses, changing nothing, when any record has no match or two records match one
cell. Check the result by recomputing a cell with the current code and comparing
(``stitching bench SUITE --cell ID --results /tmp/check``).

    python benchmarks/rekey_results.py benchmarks/digits.yaml results/digits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stitching._utils import canonical_json
from stitching.bench.cell import _feature_key
from stitching.bench.grid import expand_suite
from stitching.bench.store import ResultStore
from stitching.bench.suite import load_suite


def restricted(new: Any, old: Any) -> Any:
    """``new`` with only the dictionary keys that ``old`` has (recursively)."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {key: restricted(new[key], old[key]) for key in old if key in new}
    return new


def plan_renames(suite_path: str, results: Path) -> list[tuple[dict, Any]]:
    """(record, new cell) for every record of ``results``; raises if any record has no unique match."""
    cells = expand_suite(load_suite(suite_path))
    records = [json.loads(p.read_text()) for p in sorted((results / "cells").glob("*.json"))]
    plan, taken, problems = [], set(), []
    for record in records:
        old = record["config"]
        matches = [
            c for c in cells if canonical_json(restricted(c.config.to_dict(), old)) == canonical_json(old)
        ]
        if len(matches) != 1 or matches[0].cell_id in taken:
            problems.append(f"{record['cell_id']}: {len(matches)} matching cells")
            continue
        taken.add(matches[0].cell_id)
        plan.append((record, matches[0]))
    if problems:
        raise SystemExit("nothing renamed; records without one matching cell:\n  " + "\n  ".join(problems))
    return plan


def rekey(record: dict, cell: Any, store: ResultStore) -> None:
    """Write ``record`` under the cell's new id (config as the current code writes it); drop the old files."""
    old_id, new_id = record["cell_id"], cell.cell_id
    old_predictions = store.predictions_path(old_id)
    if old_predictions.is_file():
        old_predictions.rename(store.predictions_path(new_id))
    for side, old_key in dict(record.get("features") or {}).items():
        new_key = _feature_key(cell.config, side)
        old_file, new_file = (
            store.root / "features" / f"{old_key}.npy",
            store.root / "features" / f"{new_key}.npy",
        )
        if old_file.is_file() and not new_file.is_file():
            old_file.rename(new_file)
        record["features"][side] = new_key
    record["cell_id"], record["config"] = new_id, cell.config.to_dict()
    store.write(record)
    if old_id != new_id:
        store.path(old_id).unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    plan = plan_renames(args.suite, args.results)
    store = ResultStore(args.results)
    changed = sum(record["cell_id"] != cell.cell_id for record, cell in plan)
    for record, cell in plan:
        rekey(record, cell, store)
    print(f"{len(plan)} records matched, {changed} re-keyed in {args.results}")


if __name__ == "__main__":
    main()
