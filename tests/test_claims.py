"""Per-cell claims with real processes: workers started together on one store compute every cell exactly
once, a live claim is left to its holder, a killed claimer's cell is taken over, two takers never both win.

The workers are this file run as a script (``python test_claims.py STORE GO SECONDS CELL...``): they import
only the store and the claims (not torch), and claim cells through ``claims.claim_cell``, the function
``run_cell`` claims with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from stitching.bench import claims
from stitching.bench.record import make_record
from stitching.bench.store import ResultStore

LEASE_S = 1.5
ENV = dict(os.environ, STITCHING_CLAIM_LEASE_S=str(LEASE_S), OMP_NUM_THREADS="1")


def mark(store: ResultStore, cell_id: str, what: str) -> None:
    """One line per event of a cell's computation (appends are atomic for short lines)."""
    (store.root / "marks").mkdir(exist_ok=True)
    with open(store.root / "marks" / cell_id, "a") as f:
        f.write(f"{what} {os.getpid()}\n")


def toy_compute(store: ResultStore, cell_id: str, seconds: float, claim: claims.Claim) -> None:
    mark(store, cell_id, "start")
    time.sleep(seconds)
    cell = {"cell_id": cell_id, "suite": {"name": "toy", "version": "1"}, "config": {"seed": 0}}
    record = make_record(cell, {"target_acc": 0.5}, {"train": seconds})
    record["claim"] = claim.describe()
    store.write(record)
    mark(store, cell_id, "end")


def work(store_dir: str, cell_ids: list[str], seconds: float) -> list[str]:
    """What ``stitching bench`` does with a store: claim each pending cell and compute it, leave cells held
    elsewhere, then wait for those and take any whose claimer died. Returns the cells computed here."""
    store, computed, pending = ResultStore(store_dir), [], list(cell_ids)
    while pending:
        elsewhere = []
        for cell_id in pending:
            claim, status = claims.claim_cell(store, cell_id)
            if status == "run":
                with claim:
                    toy_compute(store, cell_id, seconds, claim)
                computed.append(cell_id)
            elif status.startswith("elsewhere"):
                elsewhere.append(cell_id)
        claims.wait_released(claims.claims_dir(store.root), elsewhere, poll_s=0.05)
        pending = [c for c in elsewhere if not store.has(c)]
    return computed


def start_workers(tmp_path: Path, n: int, cell_ids: list[str], seconds: float) -> list[subprocess.Popen]:
    """``n`` worker processes, released together once every one has started."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    cmd = [sys.executable, __file__, str(tmp_path / "store"), str(go), str(seconds), *cell_ids]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    return procs


def marks(store: ResultStore, cell_id: str) -> list[str]:
    path = store.root / "marks" / cell_id
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_three_workers_started_together_compute_every_cell_exactly_once(tmp_path):
    cells = [f"c{i:02d}" for i in range(6)]
    procs = start_workers(tmp_path, 3, cells, seconds=0.3)
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    store = ResultStore(tmp_path / "store")
    computed = [cid for out in outputs for cid in out["computed"]]
    assert sorted(computed) == cells, f"each cell once, by one worker: {outputs}"
    assert store.finished_ids() == set(cells)
    for cid in cells:
        assert marks(store, cid) == ["start", "end"], cid  # computed once, never started twice
        assert store.read(cid)["claim"]["took_over"] is False
    assert not list(claims.claims_dir(store.root).iterdir()), "every claim released"
    assert sum(1 for out in outputs if out["computed"]) >= 2, f"the work was shared: {outputs}"


def test_a_killed_claimer_is_taken_over_and_its_cell_computed_once(tmp_path):
    store = ResultStore(tmp_path / "store")
    (holder,) = start_workers(tmp_path, 1, ["c00"], seconds=60)
    claim_file = claims.claims_dir(store.root) / "c00.json"
    deadline = time.monotonic() + 30
    while marks(store, "c00") != ["start"]:
        assert time.monotonic() < deadline, "the holder never started"
        time.sleep(0.05)
    time.sleep(LEASE_S)  # past one lease: only the heartbeat keeps the claim live
    claim, status = claims.claim_cell(store, "c00", lease_s=LEASE_S)
    assert claim is None and status.startswith("elsewhere:") and f"pid {holder.pid}" in status
    holder.send_signal(signal.SIGKILL)  # no cleanup handlers: the claim file stays behind
    holder.wait()
    assert claim_file.exists() and not store.has("c00")
    (taker,) = start_workers(tmp_path, 1, ["c00"], seconds=0.1)
    out = json.loads(taker.communicate(timeout=60)[0])
    assert out["computed"] == ["c00"]
    assert marks(store, "c00") == ["start", "start", "end"], "the killed run never finished; the taker did"
    assert store.read("c00")["claim"] == {"host": claims.this_host(), "pid": taker.pid, "took_over": True}
    assert not claim_file.exists()


def write_foreign_claim(directory: Path, cell_id: str, age_s: float) -> Path:
    """A claim of a process on another host whose last heartbeat was ``age_s`` ago."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{cell_id}.json"
    info = {"cell_id": cell_id, "host": "another-host", "pid": 1, "token": "t0", "started": "earlier"}
    path.write_text(json.dumps(info))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_claim_of_another_host_holds_until_its_lease_runs_out(tmp_path):
    path = write_foreign_claim(tmp_path, "x", age_s=0)
    held = claims.try_claim(tmp_path, "x", lease_s=LEASE_S)
    assert isinstance(held, claims.Holder) and held.host == "another-host"
    os.utime(path, (time.time() - 2 * LEASE_S, time.time() - 2 * LEASE_S))  # no heartbeat for two leases
    taken = claims.try_claim(tmp_path, "x", lease_s=LEASE_S)
    assert isinstance(taken, claims.Claim) and taken.took_over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()
    assert not path.exists() and not list(tmp_path.glob(".*"))


def test_the_heartbeat_keeps_a_claim_live_past_its_lease(tmp_path):
    with claims.try_claim(tmp_path, "x", lease_s=0.6) as mine:
        time.sleep(1.5)  # 2.5 leases
        other = claims.try_claim(tmp_path, "x", lease_s=0.6)
        assert isinstance(other, claims.Holder) and other.token == mine.holder.token
        assert not mine.lost
    assert isinstance(claims.try_claim(tmp_path, "x", lease_s=0.6), claims.Claim)


TAKER = """
import sys, time
from pathlib import Path
from stitching.bench import claims
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
got = claims.try_claim(sys.argv[1], "x", lease_s=2.0)
print("won" if isinstance(got, claims.Claim) else "lost", flush=True)
time.sleep(1.0)  # hold it while the others look
"""


def test_of_several_takers_of_a_stale_claim_exactly_one_wins(tmp_path):
    write_foreign_claim(tmp_path / "claims", "x", age_s=60)
    go = tmp_path / "go"
    cmd = [sys.executable, "-c", TAKER, str(tmp_path / "claims"), str(go)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert results == ["lost", "lost", "lost", "won"]


def test_run_cell_leaves_a_cell_held_elsewhere_and_releases_its_own_claim(tmp_path, monkeypatch):
    import stitching.bench.cell as cell_module

    ctx = SimpleNamespace(is_global_zero=True, fabric=None)
    store = ResultStore(tmp_path)
    write_foreign_claim(claims.claims_dir(tmp_path), "held", age_s=0)
    with pytest.raises(claims.CellClaimed, match="cell held is running elsewhere: host another-host pid 1"):
        cell_module.run_cell(SimpleNamespace(cell_id="held"), tmp_path, context=ctx)

    def failing(*args):
        assert (claims.claims_dir(tmp_path) / "mine.json").exists()  # held while computing
        raise RuntimeError("the cell failed")

    monkeypatch.setattr(cell_module, "_compute", failing)
    with pytest.raises(RuntimeError, match="the cell failed"):
        cell_module.run_cell(SimpleNamespace(cell_id="mine"), tmp_path, context=ctx)
    assert not (claims.claims_dir(tmp_path) / "mine.json").exists(), "released when the cell failed"
    toy = {"cell_id": "mine", "suite": {"name": "t", "version": "1"}, "config": {}}
    store.write(make_record(toy, {"target_acc": 0.5}, {"train": 1.0}))
    record = cell_module.run_cell(SimpleNamespace(cell_id="mine"), tmp_path, context=ctx)  # done: not rerun
    assert record["metrics"] == {"target_acc": 0.5}


def test_the_runner_tells_cells_running_elsewhere_from_failures(tmp_path):
    from stitching.bench.runner import running_elsewhere

    store = ResultStore(tmp_path)
    write_foreign_claim(claims.claims_dir(tmp_path), "held", age_s=0)
    toy = {"cell_id": "finished", "suite": {"name": "t", "version": "1"}, "config": {}}
    store.write(make_record(toy, {"target_acc": 0.5}, {"train": 1.0}))  # its holder finished it meanwhile
    errors = {"held": "CellClaimed: ...", "finished": "CellClaimed: ...", "broken": "ValueError: ..."}
    elsewhere = running_elsewhere(store, errors)
    assert list(elsewhere) == ["held"] and "another-host" in elsewhere["held"]
    assert set(errors) == {"held", "broken"}  # the runner then drops "held" from the failures


if __name__ == "__main__":  # a worker process: python test_claims.py STORE GO SECONDS CELL...
    store_dir, go_file, secs, *ids = sys.argv[1:]
    print("ready", flush=True)
    while not Path(go_file).exists():
        time.sleep(0.005)
    print(json.dumps({"computed": work(store_dir, ids, float(secs))}), flush=True)
