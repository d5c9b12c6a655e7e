"""stitching.stats: bootstrap against hand-computed cases, pairing, McNemar, hierarchy, rank groups."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from stitching.stats import (
    SMALL_TEST_SET,
    discordant_pairs,
    distinguishable_from_zero,
    hierarchical_bootstrap,
    mcnemar_p,
    paired_bootstrap,
    rank_groups,
    small_test_set_note,
)
from stitching.stats.resample import resampled_accuracies, streams

N_DIGITS = 270  # the digits test split
PENALTY = {"penalty": ("target", "stitched")}


def _vector(n_correct: int, n: int = N_DIGITS) -> np.ndarray:
    return np.arange(n) < n_correct


def _flip(correct: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """``correct`` with its first ``count`` correct images (from ``start``) made wrong."""
    out = correct.copy()
    out[np.flatnonzero(correct)[start : start + count]] = False
    return out


def _cell(rng: np.random.Generator, n: int = N_DIGITS) -> dict[str, np.ndarray]:
    target = rng.random(n) < 0.95
    return {
        "target": target,
        "source": rng.random(n) < 0.95,
        "stitched": target & (rng.random(n) < 0.95),
        "lstsq": rng.random(n) < 0.8,
        "control": rng.random(n) < 0.85,
    }


# --- the bootstrap against hand-computed cases ----------------------------------------------------


def test_two_images_one_right_gives_the_enumerated_percentiles():
    # Resampling [right, wrong]: accuracy 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 (enumerated by hand).
    correct = {"m": np.array([True, False])}
    wide = paired_bootstrap(correct, n_resamples=2000, level=0.95).accuracy["m"]
    assert (wide.estimate, wide.low, wide.high) == (0.5, 0.0, 1.0)  # 2.5% and 97.5% fall in the outer atoms
    middle = paired_bootstrap(correct, n_resamples=2000, level=0.4).accuracy["m"]
    assert (middle.low, middle.high) == (0.5, 0.5)  # the 30% and 70% quantiles both fall in the atom at 1/2


def test_resampled_accuracy_frequencies_match_enumeration():
    # N = 3, two right: every one of the 27 index triples is equally likely; count them.
    vector = np.array([True, True, False])
    exact: dict[float, float] = {}
    for triple in itertools.product(range(3), repeat=3):
        acc = round(float(vector[list(triple)].mean()), 6)
        exact[acc] = exact.get(acc, 0.0) + 1 / 27
    assert exact == pytest.approx(
        {0.0: 1 / 27, round(1 / 3, 6): 6 / 27, round(2 / 3, 6): 12 / 27, 1.0: 8 / 27}
    )
    n_resamples = 40_000
    samples = resampled_accuracies(vector[None, :], n_resamples, streams(3)[0])[:, 0]
    for acc, p in exact.items():
        frequency = np.mean(np.isclose(samples, acc))
        assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / n_resamples), (acc, frequency, p)


def test_penalty_spread_matches_enumeration_of_all_resamples():
    # N = 4: target right on images 0, 1; stitched on 0, 2. Enumerate all 4^4 resamples of the penalty.
    target = np.array([True, True, False, False])
    stitched = np.array([True, False, True, False])
    penalties = [
        target[list(idx)].mean() - stitched[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)
    ]
    exact_sd = float(np.std(penalties))
    samples = resampled_accuracies(np.stack([target, stitched]), 20_000, streams(0)[0])
    assert np.std(samples[:, 0] - samples[:, 1]) == pytest.approx(exact_sd, rel=0.03)
    assert np.mean(samples[:, 0] - samples[:, 1]) == pytest.approx(0.0, abs=4 * exact_sd / math.sqrt(20_000))


def test_bootstrap_spread_matches_the_binomial_standard_error():
    correct = _vector(243)  # 90% of 270
    analytic = math.sqrt(0.9 * 0.1 / N_DIGITS)
    samples = resampled_accuracies(correct[None, :], 4000, streams(0)[0])[:, 0]
    assert samples.std() == pytest.approx(analytic, rel=0.05)
    assert samples.mean() == pytest.approx(0.9, abs=4 * analytic / math.sqrt(4000))
    interval = paired_bootstrap({"m": correct}, n_resamples=4000).accuracy["m"]
    # percentile interval vs the normal one, up to the 1/270 grid of attainable accuracies
    assert interval.low == pytest.approx(0.9 - 1.96 * analytic, abs=2 / N_DIGITS)
    assert interval.high == pytest.approx(0.9 + 1.96 * analytic, abs=2 / N_DIGITS)


# --- pairing --------------------------------------------------------------------------------------


def test_stitched_equal_to_target_has_penalty_interval_exactly_zero():
    rng = np.random.default_rng(1)
    target = rng.random(N_DIGITS) < 0.9
    result = paired_bootstrap({"target": target, "stitched": target.copy()}, differences=PENALTY)
    penalty = result.differences["penalty"]
    assert (penalty.estimate, penalty.low, penalty.high) == (0.0, 0.0, 0.0)
    assert result.accuracy["target"].width > 0.03  # the accuracies themselves are uncertain
    assert not distinguishable_from_zero(penalty.low, penalty.high)


def test_stitched_worse_on_some_images_excludes_zero():
    target = _vector(260)
    stitched = _flip(target, 6)  # 6 images (2.2 points) lost, none gained
    result = paired_bootstrap({"target": target, "stitched": stitched}, differences=PENALTY)
    penalty = result.differences["penalty"]
    assert penalty.estimate == pytest.approx(6 / N_DIGITS)
    assert penalty.low > 0.0 and penalty.contains(penalty.estimate)
    assert distinguishable_from_zero(penalty.low, penalty.high)
    # unpaired, the two accuracy intervals overlap: only pairing separates the penalty from 0
    assert result.accuracy["stitched"].high > result.accuracy["target"].low


def test_paired_penalty_spread_is_that_of_the_per_image_differences():
    rng = np.random.default_rng(2)
    cell = _cell(rng)
    d = cell["target"].astype(float) - cell["stitched"].astype(float)
    analytic = d.std() / math.sqrt(N_DIGITS)  # plug-in SE of the mean per-image difference
    samples = resampled_accuracies(np.stack([cell["target"], cell["stitched"]]), 4000, streams(0)[0])
    assert np.std(samples[:, 0] - samples[:, 1]) == pytest.approx(analytic, rel=0.06)


def test_differences_are_the_ones_asked_for_and_signed():
    rng = np.random.default_rng(3)
    cell = _cell(rng)
    result = paired_bootstrap(
        cell, differences={"penalty": ("target", "stitched"), "reverse": ("stitched", "target")}
    )
    assert set(result.differences) == {"penalty", "reverse"}
    assert set(result.accuracy) == set(cell)
    penalty, reverse = result.differences["penalty"], result.differences["reverse"]
    acc = result.accuracy
    assert penalty.estimate == pytest.approx(acc["target"].estimate - acc["stitched"].estimate)
    assert (reverse.estimate, reverse.low, reverse.high) == pytest.approx(
        (-penalty.estimate, -penalty.high, -penalty.low)
    )


def test_zero_one_integers_are_accepted_as_booleans():
    rng = np.random.default_rng(4)
    cell = _cell(rng)
    as_ints = {name: v.astype(np.int64) for name, v in cell.items()}
    assert paired_bootstrap(as_ints, differences=PENALTY) == paired_bootstrap(cell, differences=PENALTY)


def test_narrower_level_gives_narrower_interval():
    cell = _cell(np.random.default_rng(5))
    wide = paired_bootstrap(cell, level=0.95).accuracy["lstsq"]
    narrow = paired_bootstrap(cell, level=0.5).accuracy["lstsq"]
    assert wide.low < narrow.low <= narrow.high < wide.high


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_result_other_seed_other_result():
    cell = _cell(np.random.default_rng(6))
    a = paired_bootstrap(cell, differences=PENALTY, seed=11)
    assert paired_bootstrap(cell, differences=PENALTY, seed=11) == a
    # interval ends lie on the 1/270 grid, so two seeds may agree on them; over ten seeds they must not all
    others = {paired_bootstrap(cell, differences=PENALTY, seed=s).differences["penalty"] for s in range(10)}
    assert len(others) > 1
    rows = np.stack(list(cell.values()))
    assert np.array_equal(
        resampled_accuracies(rows, 100, streams(11)[0]), resampled_accuracies(rows, 100, streams(11)[0])
    )
    assert not np.array_equal(
        resampled_accuracies(rows, 100, streams(11)[0]), resampled_accuracies(rows, 100, streams(12)[0])
    )


def test_result_is_json_ready():
    result = paired_bootstrap(_cell(np.random.default_rng(7)), differences=PENALTY, n_resamples=50)
    record = json.loads(json.dumps(result.as_dict()))
    assert record["method"] == "percentile" and record["n_resamples"] == 50 and record["n_images"] == N_DIGITS
    penalty = result.differences["penalty"]
    assert record["differences"]["penalty"] == {
        "estimate": penalty.estimate,
        "ci": [penalty.low, penalty.high],
    }
    scaled = penalty.scaled(100)
    assert (scaled.low, scaled.high) == pytest.approx((100 * penalty.low, 100 * penalty.high))


# --- McNemar --------------------------------------------------------------------------------------


def test_mcnemar_on_a_hand_case():
    # 7 images only the target gets right, 2 only stitched, 30 both, 5 neither.
    target = np.array([True] * 7 + [False] * 2 + [True] * 30 + [False] * 5)
    stitched = np.array([False] * 7 + [True] * 2 + [True] * 30 + [False] * 5)
    assert discordant_pairs(target, stitched) == (7, 2)
    # two-sided exact binomial on 9 discordant pairs: P(X <= 2) + P(X >= 7) = 2 (1 + 9 + 36) / 2^9
    assert mcnemar_p(target, stitched) == pytest.approx(92 / 512, rel=1e-12)
    assert mcnemar_p(target, stitched) == pytest.approx(binomtest(7, 9, 0.5).pvalue, rel=1e-12)
    assert mcnemar_p(stitched, target) == pytest.approx(mcnemar_p(target, stitched), rel=1e-12)


def test_mcnemar_without_discordant_pairs_is_one_and_small_for_a_clear_loss():
    target = _vector(250)
    assert mcnemar_p(target, target.copy()) == 1.0
    assert mcnemar_p(target, _flip(target, 15)) == pytest.approx(2 * 0.5**15, rel=1e-9)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_p(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(ValueError, match="at least 2"):
        mcnemar_p(np.ones(1, bool), np.ones(1, bool))


# --- hierarchical ---------------------------------------------------------------------------------


def test_hierarchical_with_one_group_is_the_paired_bootstrap():
    cell = _cell(np.random.default_rng(8))
    diffs = {"penalty": ("target", "stitched"), "control_penalty": ("target", "control")}
    paired = paired_bootstrap(cell, differences=diffs, n_resamples=1000, seed=5)
    assert hierarchical_bootstrap([cell], differences=diffs, n_resamples=1000, seed=5) == paired


def test_hierarchical_with_identical_groups_matches_paired():
    cell = _cell(np.random.default_rng(9))
    paired = paired_bootstrap(cell, differences=PENALTY, seed=1)
    copies = hierarchical_bootstrap([cell, dict(cell), dict(cell)], differences=PENALTY, seed=1)
    assert copies.n_groups == 3
    for name in cell:
        a, b = copies.accuracy[name], paired.accuracy[name]
        assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high), abs=1e-12)


def test_hierarchical_interval_is_wider_when_seeds_disagree():
    target = _vector(260)
    agree = {"target": target, "stitched": target.copy()}
    disagree = {"target": target, "stitched": _flip(target, 40)}  # one seed pair loses 40 images
    groups = [agree, disagree]
    both = hierarchical_bootstrap(groups, differences=PENALTY).differences["penalty"]
    images_only = hierarchical_bootstrap(groups, differences=PENALTY, resample_groups=False)
    images_only_penalty = images_only.differences["penalty"]
    assert both.estimate == pytest.approx(20 / N_DIGITS) == images_only_penalty.estimate
    assert both.width > 2 * images_only_penalty.width
    for group in groups:  # and wider than either seed's own paired interval
        assert both.width > paired_bootstrap(group, differences=PENALTY).differences["penalty"].width
    assert both.low == 0.0  # drawing the agreeing seed twice gives a zero penalty (p = 1/4)


def test_hierarchical_matches_names_not_positions_and_shares_the_image_resample():
    rng = np.random.default_rng(10)
    first, second = _cell(rng), _cell(rng)
    reordered = {name: second[name] for name in reversed(list(second))}
    diffs = {"penalty": ("target", "stitched")}
    assert hierarchical_bootstrap([first, reordered], differences=diffs) == hierarchical_bootstrap(
        [first, second], differences=diffs
    )
    # the same image resample for every group: two groups that are each other's complement on target add
    # to exactly one correct image per image, so their mean target accuracy is 1/2 in every resample
    other = dict(first, target=~first["target"])
    half = hierarchical_bootstrap([first, other], resample_groups=False).accuracy["target"]
    assert (half.estimate, half.low, half.high) == (0.5, 0.5, 0.5)


# --- rank groups ----------------------------------------------------------------------------------


def test_rank_groups_overlap_shares_rank_separation_does_not():
    rows = [
        ("c", 5.0, 4.0, 6.0),
        ("a", 1.0, 0.0, 2.0),
        ("d", 5.5, 4.5, 7.0),
        ("b", 1.5, 0.5, 2.5),
        ("e", 3.0, 2.1, 3.9),
    ]
    ranked = rank_groups(rows)
    assert [(r.rank, r.name) for r in ranked] == [(1, "a"), (1, "b"), (2, "e"), (3, "c"), (3, "d")]
    assert ranked[0].estimate == 1.0 and (ranked[0].low, ranked[0].high) == (0.0, 2.0)


def test_rank_groups_compare_with_the_group_leader_only():
    # y overlaps x, z overlaps y but not x: z opens a new group (no chaining through y).
    ranked = rank_groups([("x", 1.0, 0.0, 2.0), ("y", 2.5, 1.5, 3.5), ("z", 4.0, 3.0, 5.0)])
    assert [(r.rank, r.name) for r in ranked] == [(1, "x"), (1, "y"), (2, "z")]
    touching = rank_groups([("x", 1.0, 0.0, 2.0), ("w", 3.0, 2.0, 4.0)])  # closed intervals: touching shares
    assert [r.rank for r in touching] == [1, 1]


def test_rank_groups_higher_is_better_and_bad_rows():
    ranked = rank_groups([("low", 0.80, 0.75, 0.85), ("high", 0.97, 0.95, 0.99)], lower_is_better=False)
    assert [(r.rank, r.name) for r in ranked] == [(1, "high"), (2, "low")]
    assert rank_groups([]) == []
    with pytest.raises(ValueError, match="low"):
        rank_groups([("bad", 1.0, 2.0, 0.0)])
    with pytest.raises(ValueError, match="NaN"):
        rank_groups([("nan", float("nan"), 0.0, 1.0)])


def test_distinguishable_from_zero():
    assert distinguishable_from_zero(0.01, 0.2)
    assert distinguishable_from_zero(-0.2, -0.01)
    assert not distinguishable_from_zero(-0.1, 0.1)
    assert not distinguishable_from_zero(0.0, 0.1)  # closed: 0 is in the interval
    assert not distinguishable_from_zero(0.0, 0.0)
    with pytest.raises(ValueError, match="not an interval"):
        distinguishable_from_zero(0.2, 0.1)


# --- small test sets and bad input ----------------------------------------------------------------


def test_small_test_set_still_gets_intervals_and_a_note():
    assert SMALL_TEST_SET == 100
    assert small_test_set_note(100) is None and small_test_set_note(N_DIGITS) is None
    small = paired_bootstrap({"target": _vector(45, 50), "stitched": _vector(40, 50)}, differences=PENALTY)
    assert small.note is not None and "50 images" in small.note
    assert small.differences["penalty"].low > 0.0
    assert paired_bootstrap({"m": _vector(200)}).note is None
    assert hierarchical_bootstrap([{"m": _vector(5, 10)}]).note is not None


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_images_is_an_error(n):
    with pytest.raises(ValueError, match="at least 2 test images"):
        paired_bootstrap({"target": np.ones(n, bool), "stitched": np.ones(n, bool)})
    with pytest.raises(ValueError, match="at least 2 test images"):
        hierarchical_bootstrap([{"target": np.ones(n, bool)}])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_resamples": -5}, "n_resamples"),
        ({"n_resamples": 10.5}, "n_resamples"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"differences": {"penalty": ("target", "stiched")}}, "unknown name.*stiched"),
        ({"differences": {"penalty": ("target",)}}, "pair"),
    ],
)
def test_bad_settings_are_errors(kwargs, match):
    cell = {"target": _vector(10, 20), "stitched": _vector(9, 20)}
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(cell, **kwargs)
    with pytest.raises(ValueError, match=match):
        hierarchical_bootstrap([cell], **kwargs)


def test_bad_vectors_are_errors():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap({"target": np.ones(270, bool), "stitched": np.ones(269, bool)})
    with pytest.raises(ValueError, match="no correctness vectors"):
        paired_bootstrap({})
    with pytest.raises(ValueError, match="1-D"):
        paired_bootstrap({"target": np.ones((2, 5), bool)})
    with pytest.raises(ValueError, match="booleans"):
        paired_bootstrap({"target": np.array([0, 1, 2])})


def test_bad_groups_are_errors():
    cell = {"target": _vector(10, 20), "stitched": _vector(9, 20)}
    with pytest.raises(ValueError, match="no groups"):
        hierarchical_bootstrap([])
    with pytest.raises(ValueError, match=r"groups\[1\]: names"):
        hierarchical_bootstrap([cell, {"target": _vector(10, 20)}])
    with pytest.raises(ValueError, match=r"groups\[1\]: 21 images"):
        hierarchical_bootstrap([cell, {"target": _vector(10, 21), "stitched": _vector(9, 21)}])
