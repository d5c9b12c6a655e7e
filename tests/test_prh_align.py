"""Many-model alignment: PRH's feature preparation, layer x layer scores, max-null calibration, outputs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from stitching.bench.cache import ActivationCache
from stitching.cuts import list_cuts, split_model
from stitching.metrics import get_metric, reduce_activation
from stitching.models import create_model
from stitching.prh.align import (
    AlignSettings,
    alignment_matrices,
    clip_outliers,
    pair_alignment,
    prepare,
    sweep,
    symmetric,
    write_alignment,
)
from stitching.prh.features import FeatureSet, vision_feature_set

torch.set_num_threads(1)


def _reference_remove_outliers(feats, q, exact=False):
    """minyoungg/platonic-rep metrics.remove_outliers, verbatim (the ``max_threshold`` branch is a no-op)."""
    if q == 1:
        return feats
    if exact:
        q_val = feats.view(-1).abs().sort().values[int(q * feats.numel())]
    else:
        q_val = torch.quantile(feats.abs().flatten(start_dim=1), q, dim=1).mean()
    return feats.clamp(-q_val, q_val)


@pytest.mark.parametrize("exact", [False, True])
def test_clip_outliers_matches_the_prh_reference(exact):
    feats = torch.randn(50, 3, 17) ** 3  # heavy tails, so the clip bites
    ours = clip_outliers(feats, 0.95, exact)
    assert torch.allclose(ours, _reference_remove_outliers(feats, 0.95, exact), atol=1e-6)
    assert ours.abs().max() < feats.abs().max()


def _rotation(d):
    return torch.linalg.qr(torch.randn(d, d)).Q


def _set(name, layers, modality="vision"):
    return FeatureSet(name, modality, [f"l{i}" for i in range(len(layers))], layers)


def test_prepare_clips_jointly_when_layers_share_a_width_and_normalises_rows():
    a, b = torch.randn(40, 8), 10 * torch.randn(40, 8)
    joint = prepare(_set("m", [a, b]), AlignSettings())
    reference = _reference_remove_outliers(torch.stack([a, b], 1), 0.95)
    expected = torch.nn.functional.normalize(reference[:, 0], dim=-1)
    assert torch.allclose(joint[0], expected, atol=1e-6)
    assert torch.allclose(joint[1].norm(dim=1), torch.ones(40), atol=1e-5)
    per_layer = prepare(_set("m", [a, torch.randn(40, 5)]), AlignSettings())  # widths differ
    own = torch.nn.functional.normalize(_reference_remove_outliers(a, 0.95), dim=-1)
    assert torch.allclose(per_layer[0], own, atol=1e-6)
    raw = prepare(_set("m", [a]), AlignSettings(prh_protocol=False))
    assert torch.equal(raw[0], a)


def test_pair_alignment_finds_the_shared_layer_and_calibrates_against_the_max_null():
    torch.manual_seed(0)
    shared = torch.randn(120, 6)
    a = _set("a", [torch.randn(120, 6), shared @ _rotation(6), torch.randn(120, 6)])
    b = _set("b", [torch.randn(120, 5), shared @ _rotation(6)])
    settings = AlignSettings(metrics=("mutual_knn",), n_permutations=50)
    pair = pair_alignment(a, b, "mutual_knn", settings)
    assert pair.best_pair == (1, 1) and pair.best_layers == ("l1", "l1")
    assert pair.scores.shape == (3, 2)
    assert pair.scores[1, 1] > 3 * pair.scores.max(1).values[[0, 2]].max()
    xs, ys = prepare(a, settings), prepare(b, settings)
    assert pair.score == pytest.approx(get_metric("mutual_knn")(xs[1], ys[1], topk=10))
    assert pair.p_value == pytest.approx(1 / 51) and pair.calibrated > 0.5
    c = _set("c", [torch.randn(120, 4)])
    unrelated = pair_alignment(a, c, "mutual_knn", settings)
    assert unrelated.p_value > 0.05 and unrelated.calibrated == 0.0
    # the best of several layer pairs is judged against the null of the best, which lies higher
    raw = AlignSettings(metrics=("mutual_knn",), n_permutations=50, prh_protocol=False)
    single = pair_alignment(_set("a0", [a.features[0]]), c, "mutual_knn", raw)
    assert pair_alignment(a, c, "mutual_knn", raw).null95 >= single.null95


def test_alignment_matrices_score_each_pair_once_and_fill_symmetric_matrices():
    torch.manual_seed(1)
    base = torch.randn(60, 5)
    sets = [_set(n, [base @ _rotation(5) + 0.1 * torch.randn(60, 5)]) for n in ("x", "y", "z")]
    settings = AlignSettings(metrics=("mutual_knn", "linear_cka"), n_permutations=20)
    result = alignment_matrices(sets, settings)
    assert len(result.pairs) == 6  # 3 unordered pairs x 2 metrics
    table = result.table()
    assert set(table.columns) >= {"metric", "a", "b", "layer_a", "layer_b", "score", "calibrated", "p_value"}
    matrix = symmetric(result.matrix("linear_cka", "score"))
    assert matrix.loc["x", "y"] == matrix.loc["y", "x"] > 0.8
    assert pd.isna(matrix.loc["x", "x"])
    assert len(result.layer_table()) == 6


def test_cross_modal_pairs_only_vision_with_text():
    sets = [_set("v1", [torch.randn(30, 4)]), _set("v2", [torch.randn(30, 4)]),
            _set("t1", [torch.randn(30, 4)], "text")]  # fmt: skip
    result = alignment_matrices(sets, AlignSettings(n_permutations=5, pairs="cross_modal"))
    assert sorted((a, b) for _, a, b in result.pairs) == [("v1", "t1"), ("v2", "t1")]


def test_bad_input_is_refused_before_scoring():
    with pytest.raises(ValueError, match="topk < n"):
        alignment_matrices([_set("a", [torch.randn(10, 3)]), _set("b", [torch.randn(10, 3)])],
                           AlignSettings(topk=10))  # fmt: skip
    with pytest.raises(ValueError, match="same samples"):
        alignment_matrices(
            [_set("a", [torch.randn(20, 3)]), _set("b", [torch.randn(21, 3)])], AlignSettings()
        )
    with pytest.raises(ValueError, match="unknown metric"):
        AlignSettings(metrics=("mutual_knm",))
    with pytest.raises(ValueError, match="one N"):
        FeatureSet("a", "vision", ["l0", "l1"], [torch.randn(5, 2), torch.randn(6, 2)])


def test_sweep_over_k_and_n_shows_mutual_knn_falling_with_n():
    torch.manual_seed(2)
    base = torch.randn(400, 6)
    sets = [_set(n, [base + 1.5 * torch.randn(400, 6)]) for n in ("a", "b")]
    table = sweep(sets, AlignSettings(n_permutations=10), ks=[5, 10, 60], ns=[50, 400], repeats=2)
    # k = 60 is undefined at n = 50 (k >= n): skipped there
    assert set(zip(table.k, table.n, strict=True)) == {(5, 50), (5, 400), (10, 50), (10, 400), (60, 400)}
    assert len(table[(table.k == 5) & (table.n == 50)]) == 2  # two random subsets below the full n
    means = table.groupby(["k", "n"]).score.mean()
    assert means[(10, 50)] > means[(10, 400)] and means[(5, 50)] > means[(5, 400)]


def test_vision_features_match_split_model_at_every_cut_and_are_cached(tmp_path):
    model = create_model("mini_convnext", num_classes=10).eval()
    images = torch.randn(12, 3, 32, 32)
    cache = ActivationCache(tmp_path, persist=True)
    key = {"model": "mini_convnext", "seed": 0, "data": "random-12"}
    fs = vision_feature_set("cnx", model, images, batch_size=5, cache=cache, key=key)
    cuts = list_cuts(model, (3, 32, 32))
    assert fs.layers == [c.name for c in cuts] and fs.n == 12
    for cut, feats in zip(cuts, fs.features, strict=True):
        front, _ = split_model(model, cut.name)
        with torch.no_grad():
            expected = reduce_activation(front(images), "mean")
        assert torch.allclose(feats, expected, atol=1e-5)
    assert cache.misses == 1
    again = vision_feature_set("cnx", model, images, cache=ActivationCache(tmp_path, persist=True), key=key)
    assert all(torch.equal(x, y) for x, y in zip(fs.features, again.features, strict=True))
    assert len(list(tmp_path.glob("*.npy"))) == 1
    flat = vision_feature_set("cnx", model, images, cuts=[cuts[-1].name], reduction="flatten")
    assert flat.features[0].shape == (12, cuts[-1].spec.channels * cuts[-1].spec.num_positions)
    with pytest.raises(ValueError, match="unknown cut"):
        vision_feature_set("cnx", model, images, cuts=["stage9"])
    with pytest.raises(ValueError, match="no class token"):
        vision_feature_set("cnx", model, images, reduction="cls")


def test_write_alignment_writes_matrices_heatmaps_and_layer_maps(tmp_path):
    sets = [_set(n, [torch.randn(30, 4), torch.randn(30, 3)]) for n in ("p", "q", "r")]
    result = alignment_matrices(sets, AlignSettings(n_permutations=5))
    written = write_alignment(tmp_path, result, order=["r", "q", "p"])
    frame = pd.read_csv(tmp_path / "mutual_knn_score.csv", index_col=0)
    assert list(frame.index) == ["r", "q", "p"] == list(frame.columns)
    assert frame.loc["p", "q"] == frame.loc["q", "p"]
    for name in ("mutual_knn.png", "pairs.csv", "layers.csv", "layers/mutual_knn/p__q.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name) in written
    with pytest.raises(ValueError, match="missing"):
        write_alignment(tmp_path, result, order=["p"])


@pytest.mark.parametrize("dense_limit", [4096, 10])
def test_mutual_knn_fast_path_equals_permutation_test_max(dense_limit, monkeypatch):
    from stitching.metrics import permutation_test_max
    from stitching.prh import knn_layers

    monkeypatch.setattr(knn_layers, "_DENSE_LIMIT", dense_limit)  # 10: the sorted-keys lookup
    torch.manual_seed(3)
    base = torch.randn(80, 5)
    a = _set("a", [base + torch.randn(80, 5), torch.randn(80, 7)])
    b = _set("b", [torch.randn(80, 3), base @ _rotation(5) + 0.5 * torch.randn(80, 5), torch.randn(80, 4)])
    settings = AlignSettings(n_permutations=40, topk=7, seed=5)
    fast = pair_alignment(a, b, "mutual_knn", settings)
    xs, ys = prepare(a, settings), prepare(b, settings)
    reference = permutation_test_max(
        "mutual_knn", xs, ys, n_permutations=40, seed=5, metric_kwargs={"topk": 7}
    )
    assert torch.allclose(fast.scores, reference.scores, atol=1e-12)
    assert fast.best_pair == reference.best_pair
    for value in ("score", "p_value", "null95", "threshold", "calibrated"):
        assert getattr(fast, value) == pytest.approx(getattr(reference, value), abs=1e-12)
