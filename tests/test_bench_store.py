"""Results store, activation cache and the adapter training loop: no models needed."""

import json
import multiprocessing as mp
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stitching.bench.cache import ActivationCache, cache_key
from stitching.bench.record import READABLE, SCHEMA, CellRecord, RecordError, make_record
from stitching.bench.store import ResultStore, StoreWarning
from stitching.core.optim import Recipe
from stitching.core.training import TrainOptions, train_adapter
from stitching.nn import freeze


def record(cell_id, **metrics):
    cell = {"cell_id": cell_id, "suite": {"name": "t", "version": "1"}, "config": {"seed": 0}}
    return make_record(cell, metrics, {"train": 1.0}, adapter_params=3)


def test_store_writes_atomically_and_lists_only_complete_records(tmp_path):
    store = ResultStore(tmp_path)
    store.write(record("abc", target_acc=np.float32(0.5)))
    (store.cells_dir / ".def.123.tmp").write_text("{partial")  # an interrupted write
    assert store.finished_ids() == {"abc"}
    assert [r["metrics"]["target_acc"] for r in store.records()] == [0.5]
    store.write(record("abc", target_acc=1.0))  # same id: replaced, never duplicated
    assert len(store) == 1 and store.read("abc")["metrics"]["target_acc"] == 1.0
    assert stat.S_IMODE(store.path("abc").stat().st_mode) == 0o644  # group-readable


def test_a_record_of_another_schema_is_refused_naming_the_file_and_both_versions(tmp_path):
    store = ResultStore(tmp_path)
    store.write({**record("old"), "schema": "stitching.cell/0"})
    with pytest.raises(RecordError) as err:
        store.read("old")
    message = str(err.value)
    assert str(store.path("old")) in message and "'stitching.cell/0'" in message and repr(SCHEMA) in message
    assert not store.path("old").exists()  # quarantined, not deleted
    store.write({**record("old"), "schema": "stitching.cell/0"})
    with pytest.warns(StoreWarning, match=r"stitching\.cell/0.*moved to .*quarantine"):
        assert list(store.records()) == []  # the leaderboard reads on, the cell counts as not done
    unversioned = record("none")
    del unversioned["schema"]
    store.write(unversioned)
    with pytest.raises(RecordError, match=r"none\.json: record schema None"):
        store.read("none")


def test_cell_record_round_trips_and_keeps_the_json_layout():
    data = record("abc", target_acc=0.5, penalty=0.1)
    assert set(data) == {
        *("schema", "cell_id", "suite", "config", "metrics", "higher_is_better", "timings", "versions"),
        *("git_commit", "created", "host", "adapter_params"),
    }  # extra fields that were not given stay out of the file, as before
    typed = CellRecord.from_dict(data)
    assert typed.higher_is_better == {"target_acc": True, "penalty": False}
    assert typed.timings == {"train": 1.0, "total": 1.0} and typed.adapter_params == 3
    assert typed.to_dict() == data
    with pytest.raises(RecordError, match=r"unknown keys \['colour'\]"):
        CellRecord.from_dict({**data, "colour": "red"})


def test_the_committed_reference_records_load():
    results = Path(__file__).resolve().parents[1] / "results"
    stores = [ResultStore(d.parent) for d in results.glob("*/cells")]
    assert stores
    for store in stores:
        records = [store.read_record(cell_id) for cell_id in sorted(store.finished_ids())]
        assert records and all(r.schema in READABLE and r.specs is not None for r in records)


def _writer(root, i):
    suite = {"name": "t", "version": "1"}
    cell = {"cell_id": f"c{i % 4}", "suite": suite, "config": {"payload": "x" * 100_000}}
    ResultStore(root).write(make_record(cell, {"target_acc": i / 16}, {"train": 1.0}))


def test_concurrent_writers_never_leave_a_corrupt_record(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, i)) for i in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    store = ResultStore(tmp_path)
    assert store.finished_ids() == {"c0", "c1", "c2", "c3"}
    for path in store.cells_dir.glob("*.json"):
        assert len(json.loads(path.read_text())["config"]["payload"]) == 100_000
    assert not list(store.cells_dir.glob(".*.tmp"))


def _batches(x, size=7):
    return lambda: (x[i : i + size] for i in range(0, len(x), size))


def test_cache_computes_once_and_evicts_least_recently_used(tmp_path):
    x = torch.randn(20, 3, 4)
    cache = ActivationCache(tmp_path, memory_budget_gb=2 * x.numel() * 4 / 2**30)
    calls = []

    def producer(tensor):
        def make():
            calls.append(1)
            return _batches(tensor)()

        return make

    a = cache.get("a", producer(x), 20, (3, 4))
    assert torch.equal(a, x)
    assert torch.equal(cache.get("a", producer(x), 20, (3, 4)), x) and len(calls) == 1
    cache.get("b", producer(x + 1), 20, (3, 4))
    cache.get("c", producer(x + 2), 20, (3, 4))  # over budget: "a" is evicted
    assert cache.memory_bytes <= cache.budget
    cache.get("a", producer(x), 20, (3, 4))
    assert len(calls) == 4


def test_cache_spills_to_a_memory_map_beyond_budget_and_reuses_it_across_instances(tmp_path):
    x = torch.randn(50, 8, 2, 2)
    small = ActivationCache(tmp_path, memory_budget_gb=100 / 2**30, dtype=torch.float16)
    out = small.get(cache_key(model="m", split="train"), _batches(x), 50, (8, 2, 2))
    assert out.dtype == torch.float16 and small.memory_bytes == 0  # on disk, not counted in memory
    assert torch.allclose(out.float(), x, atol=1e-2)
    again = ActivationCache(tmp_path, memory_budget_gb=100 / 2**30, dtype=torch.float16)
    reused = again.get(cache_key(model="m", split="train"), lambda: pytest.fail("recomputed"), 50, (8, 2, 2))
    assert torch.equal(reused, out) and again.hits == 1


def test_cache_refuses_an_oversized_entry_without_a_directory():
    cache = ActivationCache(None, memory_budget_gb=1e-9)
    with pytest.raises(MemoryError, match="cache directory"):
        cache.get("k", _batches(torch.zeros(10, 10)), 10, (10,))


def test_cache_checks_the_sample_count(tmp_path):
    with pytest.raises(RuntimeError, match="yielded 10 samples, expected 11"):
        ActivationCache(tmp_path).get("k", _batches(torch.zeros(10, 2)), 11, (2,))


def _problem(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    labels = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    back = freeze(nn.Linear(6, 4))
    with torch.no_grad():
        back.weight.copy_(torch.eye(4, 6) * 4)
    return x, labels, back


def test_train_adapter_trains_only_the_adapter_and_learns():
    x, labels, back = _problem()
    before = back.weight.clone()
    adapter = nn.Linear(6, 6)
    log = train_adapter(
        adapter, back, x, labels, Recipe(epochs=30, batch_size=32, lr=0.05), TrainOptions(val=(x, labels))
    )
    assert torch.equal(back.weight, before)
    assert log.epochs[-1]["val_acc"] > 0.9 and log.steps == 30 * 8


def test_train_adapter_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    x, labels, back = _problem()
    recipe = Recipe(epochs=6, batch_size=32, lr=0.05)
    torch.manual_seed(0)
    straight = nn.Linear(6, 6)
    train_adapter(straight, back, x, labels, recipe, TrainOptions(seed=1))
    # A run killed during epoch 4 of 6 (an exception from the optimizer) must resume after epoch 3.
    ckpt = tmp_path / "adapter.pt"
    torch.manual_seed(0)
    cut = nn.Linear(6, 6)

    class Stop(Exception):
        pass

    original = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3 * 8:
            raise Stop
        return original(self, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", step)
        with pytest.raises(Stop):
            train_adapter(cut, back, x, labels, recipe, TrainOptions(seed=1, checkpoint=ckpt))
    torch.manual_seed(123)
    resumed = nn.Linear(6, 6)  # different init: everything must come from the checkpoint
    log = train_adapter(resumed, back, x, labels, recipe, TrainOptions(seed=1, checkpoint=ckpt))
    assert log.resumed_from_epoch == 3 and len(log.epochs) == 6
    assert torch.allclose(resumed.weight, straight.weight, atol=1e-6)
