"""Model store: train on first use, reuse, keys, sources from names/checkpoints, concurrent first use."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stitching import zoo
from stitching.data import DigitsDataModule
from stitching.zoo import ModelSource, get_trained, load_model, load_model_with_info


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCHING_CACHE", str(tmp_path / "cache"))


def test_trains_on_first_use_then_reuses(tiny_recipe, monkeypatch):
    source = ModelSource("test_resnet", train=tiny_recipe, seed=1)
    model, info = load_model_with_info(source, num_classes=10)
    assert not model.training and info["kind"] == "trained"
    assert info["train_seconds"] > 0 and info["epochs"] == 1
    # The stored test accuracy is that of the stored weights on the recipe's test split (one batch of 32).
    digits = DigitsDataModule(batch_size=32, num_workers=0)
    digits.setup("test")
    x, y = next(iter(digits.test_dataloader()))
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean().item() == pytest.approx(info["test_acc"], abs=1e-6)
    stored = zoo.cache_dir() / info["key"]
    assert json.loads((stored / "metrics.json").read_text())["test_acc"] == info["test_acc"]
    assert (stored / "config.yaml").is_file() and not list(zoo.cache_dir().glob(".tmp-*"))

    def no_training(*args, **kwargs):
        raise AssertionError("the stored model should have been reused")

    monkeypatch.setattr(zoo, "_train_into", no_training)
    x = torch.randn(4, 3, 32, 32)
    again = load_model(source)
    torch.testing.assert_close(again(x), model(x))
    assert get_trained(source).key == info["key"]


def test_store_key_follows_seed_and_name_not_workers(tiny_recipe, tmp_path):
    def key(name, seed, path=tiny_recipe):
        return zoo.store_key(
            zoo._resolved_config(zoo._training_args(ModelSource(name, train=path, seed=seed)))
        )

    assert len({key("test_resnet", 0), key("test_resnet", 1), key("test_vit", 0)}) == 3
    noisy = tmp_path / "noisy.yaml"  # same recipe, other loader workers and progress bar: same weights
    text = Path(tiny_recipe).read_text()
    noisy.write_text(
        text.replace("num_workers: 0", "num_workers: 3").replace("progress_bar: false", "progress_bar: true")
    )
    assert key("test_resnet", 0, str(noisy)) == key("test_resnet", 0)
    longer = tmp_path / "longer.yaml"
    longer.write_text(text.replace("max_epochs: 1", "max_epochs: 2"))
    assert key("test_resnet", 0, str(longer)) != key("test_resnet", 0)


def test_parsing_a_recipe_keeps_the_callers_random_state(tiny_recipe):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    zoo._resolved_config(zoo._training_args(ModelSource("test_resnet", train=tiny_recipe, seed=9)))
    torch.testing.assert_close(torch.rand(3), expected)


def test_random_and_named_sources():
    a = load_model(ModelSource("test_resnet", seed=0), num_classes=7)
    b = load_model(ModelSource("test_resnet", seed=0), num_classes=7)
    c = load_model(ModelSource("test_resnet", seed=1), num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    assert a(x).shape == (2, 7)
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    assert load_model_with_info("test_resnet")[1]["kind"] == "random"


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        ModelSource("test_resnet", pretrained=True, train="x.yaml")
    with pytest.raises(FileNotFoundError, match=r"not found; shipped: .*configs/train/mini_resnet\.yaml"):
        get_trained(ModelSource("mini_resnet", train="configs/train/nope.yaml"))
    with pytest.raises(ValueError, match="did you mean test_resnet"):
        load_model(ModelSource("test_resnt"))
    path = tmp_path / "w.pth"
    torch.save(load_model("test_resnet", num_classes=10).state_dict(), path)
    with pytest.raises(ValueError, match="test_vit"):
        load_model(ModelSource("test_vit", checkpoint=str(path)), num_classes=10)


def test_shipped_recipes_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = zoo._resolved_config(
        zoo._training_args(ModelSource("mini_resnet", train="configs/train/mini_resnet.yaml"))
    )
    assert config["data"]["class_path"] == "stitching.data.DigitsDataModule"


@pytest.mark.slow
def test_concurrent_first_use_trains_once(tiny_recipe, tmp_path):
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from stitching.zoo import ModelSource, get_trained
        print(get_trained(ModelSource("test_resnet", train={tiny_recipe!r}, seed=2)).key)
        """
    )
    env = {**__import__("os").environ, "STITCHING_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    keys = {o[0].decode().strip().splitlines()[-1] for o in outs}
    assert len(keys) == 1
    trained = sum(b"stitching zoo: training" in o[1] for o in outs)
    assert trained == 1  # the second process waited on the lock and reused the result
    assert sorted(p.name for p in (tmp_path / "cache" / "zoo").iterdir() if not p.name.endswith(".lock")) == [
        keys.pop()
    ]


def test_model_source_parses_from_yaml():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--source", type=ModelSource)
    yaml = "source: {name: mini_resnet, train: configs/train/mini_resnet.yaml, seed: 2}"
    config = parser.parse_string(yaml)
    source = parser.instantiate_classes(config).source
    assert source == ModelSource("mini_resnet", train="configs/train/mini_resnet.yaml", seed=2)
    with pytest.raises(Exception, match="seeed"):
        parser.parse_string("source: {name: mini_resnet, seeed: 2}")
