"""Toy cell functions standing in for the runner's ``run_cell(cell, store_dir)``: deterministic, write their
record atomically, skip finished cells. Executors pickle them by name, so they live in this importable module
(worker processes and SLURM jobs import it with ``tests/`` on their path), not in a test module.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from stitching._utils import atomic_write


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, sort_keys=True))


def toy_cell(cell: dict, store_dir: str) -> dict:
    """A deterministic 'cell': skips if its record exists, else computes, writes the record, returns it."""
    path = Path(store_dir) / f"{cell['cell_id']}.json"
    if path.exists():
        return json.loads(path.read_text())
    if cell.get("fail"):
        raise ValueError(f"cell {cell['cell_id']} was asked to fail")
    rng = random.Random(cell["seed"])
    record = {
        "cell_id": cell["cell_id"],
        "config": cell,
        "metrics": {"value": sum(rng.random() for _ in range(1000))},
    }
    write_json_atomic(path, record)
    return record


def stepped_cell(cell: dict, store_dir: str) -> dict:
    """A 'training' cell of ``steps`` slow steps that checkpoints after each and resumes from the checkpoint.

    Side effects for the tests: ``<id>.starts`` gets the step each (re)start resumed from, ``<id>.steps``
    one line per committed step (appended after the checkpoint that commits it), ``<id>.calls`` one line per
    call of this function.
    """
    store, cid = Path(store_dir), cell["cell_id"]
    with open(store / f"{cid}.calls", "a") as f:
        f.write("call\n")
    record_path = store / f"{cid}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    ckpt = store / f"{cid}.ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "total": 0}
    with open(store / f"{cid}.starts", "a") as f:
        f.write(f"{state['step']}\n")
    for step in range(state["step"], cell["steps"]):
        time.sleep(cell.get("sleep", 0.0))
        state = {"step": step + 1, "total": state["total"] + step * cell["seed"]}
        write_json_atomic(ckpt, state)
        with open(store / f"{cid}.steps", "a") as f:
            f.write(f"{step}\n")
    record = {"cell_id": cid, "config": cell, "metrics": {"total": state["total"]}}
    write_json_atomic(record_path, record)
    return record


def toy_cells(n: int = 4, fail: str | None = None) -> list[dict]:
    cells = [{"cell_id": f"c{i:02d}", "seed": i, "source": f"m{i % 2}"} for i in range(n)]
    for cell in cells:
        cell["fail"] = cell["cell_id"] == fail
    return cells


def by_source(cell: dict) -> str:
    return cell["source"]
