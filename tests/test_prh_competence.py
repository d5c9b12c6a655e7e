"""The competence suite: task battery, probes, suite checks, level configs, statistics, the generated
stitching suite, and one tiny run end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stitching.bench.suite import SuiteError
from stitching.prh.competence import competence_suite_from_dict, load_competence_suite, model_specs
from stitching.prh.competence_stats import (
    bin_alignment,
    bin_difference,
    mean_alignment,
    off_diagonal_mean,
    spearman_permutation,
)
from stitching.prh.competence_tasks import battery_summary, probe_scores, task_labels

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = str(REPO / "tests" / "data" / "train_tiny.yaml")
SUITE = {
    "name": "comp",
    "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"batch_size": 64}},
    "models": {
        "resnet": {"name": "mini_resnet", "train": "configs/train/mini_resnet.yaml", "epochs": [1, 3]},
        "vit": {"name": "mini_vit", "train": "configs/train/mini_vit.yaml", "epochs": [2, 6]},
    },
}


def test_task_labels():
    digits = np.arange(10)
    assert task_labels("digit_3", digits).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert task_labels("odd", digits).tolist() == [0, 1] * 5
    assert task_labels("greater_than_4", digits).tolist() == [0] * 5 + [1] * 5
    assert np.flatnonzero(task_labels("prime", digits)).tolist() == [2, 3, 5, 7]
    assert np.flatnonzero(task_labels("closed_loop", digits)).tolist() == [0, 6, 8, 9]
    assert np.flatnonzero(task_labels("multiple_of_3", digits)).tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="unknown task 'even'"):
        task_labels("even", digits)
    with pytest.raises(ValueError, match="digit labels 0-9"):
        task_labels("odd", np.array([3, 11]))


def _data(rng, n, informative):
    labels = rng.integers(0, 10, n)
    onehot = np.eye(10)[labels] * 3 if informative else np.zeros((n, 10))
    return onehot + rng.normal(scale=0.5, size=(n, 10)), labels


def test_probes_solve_tasks_only_on_informative_features():
    rng = np.random.default_rng(0)
    good = probe_scores(_data(rng, 400, True), _data(rng, 200, True), ("digit_0", "odd", "prime"))
    rng = np.random.default_rng(0)
    noise = probe_scores(_data(rng, 400, False), _data(rng, 200, False), ("digit_0", "odd", "prime"))
    assert min(good.values()) > 0.95
    assert max(noise.values()) < 0.65  # balanced accuracy: 0.5 is chance whatever the class balance
    assert battery_summary(good, 0.9)["tasks_solved"] == 3
    assert battery_summary(noise, 0.9)["tasks_solved"] == 0
    a = probe_scores(_data(np.random.default_rng(3), 100, True), _data(np.random.default_rng(4), 50, True))
    b = probe_scores(_data(np.random.default_rng(3), 100, True), _data(np.random.default_rng(4), 50, True))
    assert a == b


def test_suite_parses_and_levels_become_configs(tmp_path):
    suite = competence_suite_from_dict(copy.deepcopy(SUITE))
    assert suite.n_levels == 2 and suite.models["vit"].seeds == [0, 1]
    specs = model_specs(suite, tmp_path)
    assert [s.key for s in specs][:4] == ["resnet_e1_s0", "resnet_e1_s1", "resnet_e3_s0", "resnet_e3_s1"]
    assert {(s.family, s.level, s.epochs) for s in specs} == {
        ("resnet", 0, 1), ("resnet", 1, 3), ("vit", 0, 2), ("vit", 1, 6)
    }  # fmt: skip
    config = yaml.safe_load(Path(specs[2].train).read_text())
    base = yaml.safe_load((REPO / "configs/train/mini_resnet.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 3
    base["trainer"]["max_epochs"] = 3
    assert config == base  # nothing else changes: the fully trained level is the store's usual model


def test_default_suite_loads():
    suite = load_competence_suite(REPO / "benchmarks" / "prh" / "digits_competence.yaml")
    assert set(suite.models) == {"resnet", "vit", "convnext", "mobilenet"} and suite.n_levels == 3


def test_bad_suite_lists_every_problem():
    raw = copy.deepcopy(SUITE)
    raw["models"]["resnet"]["name"] = "mini_resnett"
    raw["models"]["resnet"]["epochs"] = [0, 3, 99]
    raw["models"]["vit"]["epochs"] = [6, 2, 5]
    raw["battery"] = {"tasks": ["odd", "evenn"], "threshold": 0.3}
    raw["alignment"] = {"metrics": ["mutual_nn"], "depths": [1.5]}
    with pytest.raises(SuiteError) as err:
        competence_suite_from_dict(raw, "bad.yaml")
    text = str(err.value)
    for expected in (
        "unknown model 'mini_resnett'", "did you mean", "level 0 is out of range", "level 99 is out of range",
        "give 1 to 15", "must increase", "unknown task 'evenn'", "battery.threshold",
        "unknown metric 'mutual_nn'", "alignment.depths: 1.5",
    ):  # fmt: skip
        assert expected in text, (expected, text)
    raw = copy.deepcopy(SUITE)
    raw["models"]["vit"]["epochs"] = [2]
    raw["models"]["vit"]["famly"] = 1
    with pytest.raises(
        SuiteError, match=r"same number of levels(.|\n)*unknown key 'famly'|unknown key 'famly'"
    ):
        competence_suite_from_dict(raw)


def test_alignment_statistics_follow_the_data():
    names = [f"m{i}" for i in range(16)]
    bins = pd.Series([0] * 8 + [1] * 8, index=names)
    families = pd.Series(["a", "b", "c", "d"] * 4, index=names)
    values = np.full((16, 16), 0.2)
    values[8:, 8:] = 0.8  # the high level's models are aligned with each other
    np.fill_diagonal(values, 1.0)
    frame = pd.DataFrame(values, index=names, columns=names)
    assert off_diagonal_mean(values, [8, 8, 9]) == pytest.approx(0.8)  # a model drawn twice is not paired
    assert np.allclose(mean_alignment(frame), [0.2] * 8 + [0.2 + 0.6 * 7 / 15] * 8)
    table = bin_alignment(frame, bins, n_boot=200)
    assert table["mean"].round(3).tolist() == [0.2, 0.8]
    diff = bin_difference(frame, bins, 1, 0, families, n_boot=300)
    assert diff["difference"] == pytest.approx(0.6) and diff["low"] > 0 and diff["p"] < 0.05
    rng = np.random.default_rng(0)
    noise = pd.DataFrame(rng.uniform(size=(16, 16)), index=names, columns=names)
    null = bin_difference((noise + noise.T) / 2, bins, 1, 0, families, n_boot=300)
    assert null["p"] > 0.05 and null["low"] < 0 < null["high"]
    up = spearman_permutation([1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 5, 4, 6, 8, 7, 9], n_permutations=2000)
    assert up["rho"] > 0.9 and up["p"] < 0.01
    # Within strata, a pure between-family difference is no evidence at all.
    fam = ["a"] * 4 + ["b"] * 4
    between = spearman_permutation(
        [1, 1, 1, 1, 2, 2, 2, 2], [1, 2, 1, 2, 5, 6, 5, 6], fam, n_permutations=500
    )
    assert between["p"] > 0.5


def test_stitching_suite_pairs_levels_and_kinds(tmp_path):
    from stitching.bench.grid import expand_suite
    from stitching.prh.competence_stitch import stitch_suite

    raw = copy.deepcopy(SUITE)
    raw["models"]["convnext"] = {
        "name": "mini_convnext",
        "train": "configs/train/mini_convnext.yaml",
        "epochs": [1, 2],
    }
    suite = competence_suite_from_dict(raw)
    cells = expand_suite(stitch_suite(suite, model_specs(suite, tmp_path)))
    # per level: 3 unordered family pairs (first seeds) + each family's seed 0 into its seed 1
    assert len(cells) == 2 * (3 + 3)
    kinds = pd.Series([c.config.pair_kind for c in cells]).value_counts().to_dict()
    assert kinds == {"cross_arch": 6, "same_arch": 6}
    level = {s.key: s.level for s in model_specs(suite, tmp_path)}
    for cell in cells:
        assert level[cell.config.source.key] == level[cell.config.target.key]  # one level per pair
        assert abs(cell.config.source_depth - 0.5) < 0.13 and cell.config.controls == ()


def test_classical_mds_recovers_planar_distances():
    from stitching.prh.competence_plots import classical_mds

    points = np.random.default_rng(0).normal(size=(7, 2))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    xy, explained = classical_mds(distances)
    assert np.allclose(
        np.linalg.norm(xy[:, None] - xy[None], axis=-1), distances
    ) and explained == pytest.approx(1)


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    """Two tiny models (one family, two seeds, one level): store training, probes, alignment, stitching and
    every output file."""
    from stitching.prh.competence_run import run_competence

    raw = {
        "name": "tiny",
        "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"batch_size": 64}},
        "models": {"resnet": {"name": "mini_resnet", "train": TINY_TRAIN, "epochs": [1], "seeds": [0, 1]}},
        "battery": {"tasks": ["odd", "digit_1"]},
        "alignment": {"permutations": 5, "depths": [0.5, 1.0], "samples": 60},
        "stitching": {"kinds": ["seed_pairs"], "recipe": {"epochs": 1}},
    }
    result = run_competence(competence_suite_from_dict(raw), tmp_path)
    assert list(result.models.model) == ["resnet_e1_s0", "resnet_e1_s1"]
    assert set(result.probes.columns) == {"odd", "digit_1"}
    pair = result.alignment.pairs[("mutual_knn", "resnet_e1_s0", "resnet_e1_s1")]
    assert pair.n == 60 and pair.scores.shape == (2, 2)
    assert len(result.stitching) == 1 and result.stitching.source_key[0] == "resnet_e1_s0"
    for name in (
        "models.csv",
        "levels.csv",
        "probes.csv",
        "stitching.csv",
        "README.md",
        "embedding.png",
        "alignment_vs_competence.png",
        "stitching_vs_competence.png",
        "alignment/mutual_knn_calibrated.csv",
    ):
        assert (tmp_path / name).is_file(), name  # fmt: skip
    models = pd.read_csv(tmp_path / "models.csv")
    assert models.mutual_knn_mean_calibrated.between(0, 1).all()
