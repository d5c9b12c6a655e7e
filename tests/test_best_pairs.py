"""The best cut pair of a model pair stitched at a matrix of cuts, calibrated against the max-null from the
reduced activations that the cells keep beside their records."""

from __future__ import annotations

import numpy as np
import torch

from stitching.bench.best_pairs import best_cut_pairs
from stitching.bench.leaderboard import records_to_frame, write_leaderboard
from stitching.bench.record import make_record
from stitching.bench.statistics import cell_statistics
from stitching.bench.store import ResultStore
from stitching.metrics import permutation_test_max

N, CUTS = 120, ("c0", "c1", "c2")


def _features(seed: int, signal: torch.Tensor | None) -> np.ndarray:
    noise = torch.randn(N, 8, generator=torch.Generator().manual_seed(seed))
    return (noise if signal is None else signal @ torch.randn(8, 8) + 0.1 * noise).numpy()


def _matrix_store(root, signal_pair=("c2", "c1")) -> ResultStore:
    """Source cuts c0..c2 x target cuts c0..c2; only (c2 -> c1) shares a signal."""
    store = ResultStore(root)
    torch.manual_seed(0)
    shared = torch.randn(N, 8, generator=torch.Generator().manual_seed(1234))
    labels = np.arange(N) % 10
    for i, s in enumerate(CUTS):
        store.write_features(f"src-{s}", _features(i, shared if s == signal_pair[0] else None))
        store.write_features(f"tgt-{s}", _features(10 + i, shared if s == signal_pair[1] else None))
    for i, s in enumerate(CUTS):
        for j, t in enumerate(CUTS):
            config = {
                "source": {"key": "a", "name": "m_a", "seed": 0},
                "target": {"key": "b", "name": "m_b", "seed": 1},
                "pair_kind": "cross_arch", "source_cut": s, "target_cut": t, "source_depth": i / 2,
                "target_depth": j / 2, "adapter": {}, "init": "lstsq", "stitch_seed": 0, "objective": "task",
                "recipe": {"epochs": 1}, "metrics": ["linear_cka", "mutual_knn"], "permutations": 99,
            }  # fmt: skip
            preds = {"labels": labels, "target": labels, "stitched": labels}
            stats = cell_statistics(preds)
            metrics = {"target_acc": 1.0, "stitched_acc": 1.0, "penalty": 0.0}
            metrics["penalty_p"] = stats.pop("penalty_p")
            cell = {"cell_id": f"{s}-{t}", "suite": {"name": "m", "version": "1"}, "config": config}
            record = make_record(cell, metrics, {"train": 0.1}, statistics=stats)
            record["features"] = {"source": f"src-{s}", "target": f"tgt-{t}"}
            store.write(record, predictions=preds)
    return store


def test_the_best_cut_pair_is_calibrated_against_the_max_over_all_pairs(tmp_path):
    store = _matrix_store(tmp_path)
    best = best_cut_pairs(store, records_to_frame(store.records()))
    assert sorted(best["metric"]) == ["linear_cka", "mutual_knn"]
    for row in best.itertuples():
        assert (row.source_cut, row.target_cut) == ("c2", "c1") and row.cut_pairs == 9
        assert row.p == 1 / 100 and row.calibrated > 0
    # the same numbers as calling the test on the kept activations directly
    xs = [torch.from_numpy(store.features(f"src-{c}")).double() for c in CUTS]
    ys = [torch.from_numpy(store.features(f"tgt-{c}")).double() for c in CUTS]
    direct = permutation_test_max("linear_cka", xs, ys, n_permutations=99, seed=0)
    row = best[best.metric == "linear_cka"].iloc[0]
    assert row.score == direct.score and row.null95 == direct.null95
    assert (write_leaderboard(tmp_path, plots=False)["best_cut_pairs"]).is_file()


def test_matched_cuts_have_no_best_pair_table(tmp_path):
    store = _matrix_store(tmp_path)
    frame = records_to_frame(store.records())
    diagonal = frame[frame.source_depth == frame.target_depth]
    assert best_cut_pairs(store, diagonal).empty
