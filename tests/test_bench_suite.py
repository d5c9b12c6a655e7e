"""Suite parsing, validation and grid expansion, including the shipped suites."""

from pathlib import Path

import pytest
import yaml

from stitching.bench.grid import expand_suite, model_pairs
from stitching.bench.suite import SuiteError, load_suite, suite_from_dict

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHIPPED = sorted(BENCHMARKS.glob("*.yaml"))


def small_suite(**overrides):
    raw = {
        "name": "tiny",
        "version": "1",
        "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {}},
        "models": {
            "resnet": {"name": "mini_resnet", "seeds": [0, 1]},
            "vit": {"name": "mini_vit", "seeds": [0, 1]},
        },
        "cuts": {"depths": [0.5]},
    }
    raw.update(overrides)
    return suite_from_dict(raw)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_suites_parse_and_expand(path):
    suite = load_suite(path)
    cells = expand_suite(suite)
    assert cells and len({c.cell_id for c in cells}) == len(cells)
    for cell in cells:
        assert cell.cell_id == cell.config.cell_id()


def test_default_digits_suite_covers_four_families_two_seeds_two_cuts_and_cross_pairs():
    cells = expand_suite(load_suite(BENCHMARKS / "digits.yaml"))
    configs = [c.config for c in cells]
    assert len({c.source.name for c in configs}) >= 4
    assert {c.source.seed for c in configs} == {0, 1}
    assert {c.pair_kind for c in configs} == {"self", "same_arch", "cross_arch"}
    per_model = {}
    for c in configs:
        per_model.setdefault(c.source.key, set()).add(c.source_cut)
    assert all(len(cuts) == 2 for cuts in per_model.values())
    suite = load_suite(BENCHMARKS / "digits.yaml")
    assert set(suite.controls) == {"random_source", "clustered_noise"} and suite.recipe.patience


def test_cell_ids_are_stable_and_content_addressed():
    a = expand_suite(small_suite())
    b = expand_suite(small_suite())
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    changed = expand_suite(small_suite(recipe={"epochs": 3}))
    assert not {c.cell_id for c in a} & {c.cell_id for c in changed}


def test_pair_modes():
    def kinds(**pairs):
        return sorted((s.key, s.seed, t.key, t.seed, k) for s, t, k in model_pairs(small_suite(pairs=pairs)))

    assert kinds(mode="same_arch", include_self=False) == [
        ("resnet", 0, "resnet", 1, "same_arch"),
        ("resnet", 1, "resnet", 0, "same_arch"),
        ("vit", 0, "vit", 1, "same_arch"),
        ("vit", 1, "vit", 0, "same_arch"),
    ]
    assert kinds(mode="cross_arch", include_self=False, cross_seeds="matched") == [
        ("resnet", 0, "vit", 0, "cross_arch"),
        ("resnet", 1, "vit", 1, "cross_arch"),
        ("vit", 0, "resnet", 0, "cross_arch"),
        ("vit", 1, "resnet", 1, "cross_arch"),
    ]
    assert kinds(mode="explicit", include_self=True, explicit=[["vit", "resnet"]]) == [
        ("resnet", 0, "resnet", 0, "self"),
        ("vit", 0, "resnet", 0, "cross_arch"),
        ("vit", 0, "vit", 0, "self"),
    ]


def test_matrix_mode_crosses_every_source_cut_with_every_target_cut():
    suite = small_suite(
        pairs={"mode": "explicit", "include_self": False, "explicit": [["resnet", "vit"]]},
        cuts={"depths": [0.25, 0.5, 1.0], "mode": "matrix"},
    )
    cells = expand_suite(suite)
    assert len(cells) == 9
    assert len({(c.config.source_cut, c.config.target_cut) for c in cells}) == 9


def test_bad_suite_lists_every_problem_at_once(tmp_path):
    raw = yaml.safe_load((BENCHMARKS / "digits.yaml").read_text())
    raw["models"]["resnet"]["name"] = "mini_resnett"
    raw["models"]["vit"]["nam"] = "x"
    raw["cuts"] = {"names": {"convnext": ["stages.9"]}, "depths": [0.5]}
    raw["adapters"] = [{"norm": "batchnorm"}, {"init": "lstsq"}]
    raw["inits"] = ["lstsq", "ridge"]
    raw["metrics"] = ["linear_ckaa"]
    raw["controls"] = ["random_target"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert "unknown key 'nam' (did you mean name?)" in str(err.value)
    del raw["models"]["vit"]["nam"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError) as err:
        expand_suite(load_suite(path))
    message = str(err.value)
    for expected in [
        "mini_resnett",
        "mini_resnet",
        "unknown cut 'stages.9'",
        "valid cuts: stem, stages.0",
        "adapters[0]",
        "'batchnorm'",
        "adapters[1]: set initialisations in the suite's 'inits'",
        "unknown init 'ridge'",
        "unknown metric 'linear_ckaa'",
        "linear_cka",
        "unknown control 'random_target'",
    ]:
        assert expected in message
    assert len(err.value.problems) == 7


def test_unknown_dataset_class_names_ours():
    with pytest.raises(SuiteError, match=r"stitching\.data\.DigitsDataModule"):
        expand_suite(small_suite(dataset={"class_path": "stitching.data.MNISTDataModule"}))


def test_wrong_types_are_reported():
    with pytest.raises(SuiteError) as err:
        small_suite(stitch_seeds="0", recipe={"epochs": "ten"}, pairs={"mode": "some"})
    message = str(err.value)
    assert "stitch_seeds: expected a list of int, got '0'" in message
    assert "recipe.epochs: expected int, got 'ten'" in message
    assert "pairs.mode: 'some' is not one of 'all', 'same_arch', 'cross_arch', 'explicit'" in message


def test_a_suite_with_several_mistakes_lists_all_of_them():
    raw = {
        "name": "tiny",
        "versoin": "1",
        "dataset": [],
        "models": {"a": {"nme": "mini_resnet", "seeds": "x"}, "b": 3},
        "recipe": {"optimizer": "adam", "lr": "fast"},
        "metric_reduction": "max",
        "cuts": {"depths": [0.5, "deep"]},
    }
    with pytest.raises(SuiteError) as err:
        suite_from_dict(raw, "bad.yaml")
    assert err.value.problems == [
        "suite: unknown key 'versoin' (did you mean version?)",
        "suite: missing required key 'version'",
        "dataset: expected a mapping, got []",
        "models.a: unknown key 'nme' (did you mean name?)",
        "models.a: missing required key 'name'",
        "models.a.seeds: expected a list of int, got 'x'",
        "models.b: expected a mapping, got 3",
        "cuts.depths: expected a list of float, got [0.5, 'deep']",
        "recipe.optimizer: 'adam' is not one of 'adamw', 'sgd'",
        "recipe.lr: expected float, got 'fast'",
        "metric_reduction: 'max' is not one of 'mean', 'flatten', 'cls'",
    ]
    assert str(err.value).startswith("bad.yaml: 11 problem(s) found before any training:")


def test_values_are_converted_to_the_field_types():
    suite = small_suite(version=2, cuts={"depths": [0, 1]}, recipe={"lr": 1, "optimizer": "sgd"})
    assert suite.version == "2" and suite.cuts.depths == [0.0, 1.0] and suite.recipe.lr == 1.0
    assert type(suite.recipe.lr) is float and suite.recipe.optimizer == "sgd"
    assert suite.models["vit"].seeds == [0, 1] and suite.models["vit"].checkpoint is None


def test_values_out_of_range_duplicates_and_missing_files_are_all_listed(tmp_path):
    """Issue 14: each of these was accepted by --dry-run and failed late or silently did the wrong thing."""
    from stitching.bench.grid import validate_static

    raw = {
        "name": "../x",
        "version": "1",
        "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {}},
        "models": {
            "a": {"name": "mini_resnet", "seeds": [0, 0], "train": "configs/train/nope.yaml"},
            "b": {"name": "mini_resnet", "seeds": [0, 0], "train": "configs/train/nope.yaml"},
            "c": {"name": "mini_vit", "checkpoint": "weights-{sed}.pt"},
        },
        "stitch_seeds": [1, 1],
        "recipe": {"epochs": -1, "batch_size": 0, "lr": -0.1, "patience": 0},
        "metric_samples": 0,
        "permutations": 0,
    }
    problems = "\n".join(validate_static(suite_from_dict(raw)))
    for expected in (
        "recipe.epochs: -1", "recipe.batch_size: 0", "recipe.lr: -0.1", "recipe.patience: 0",
        "metric_samples: 0", "permutations: 0", "name: '../x' is not a plain directory name",
        "stitch_seeds: [1, 1] repeats a seed", "models.a.seeds: [0, 0] repeats a seed",
        "models.b: the same model as models.a", "models.a.train: no file 'configs/train/nope.yaml'",
        "models.c.checkpoint: 'weights-{sed}.pt' is not a valid template",
    ):  # fmt: skip
        assert expected in problems


def test_yaml_syntax_errors_and_duplicate_keys_name_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodels: {a: [1, 2}\n")
    with pytest.raises(SuiteError, match=r"(?s)broken.yaml.*YAML error at line 2"):
        load_suite(broken)
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: x\nversion: '1'\nname: y\n")
    with pytest.raises(SuiteError, match=r"duplicate key 'name' \(first at line 1\)"):
        load_suite(twice)
