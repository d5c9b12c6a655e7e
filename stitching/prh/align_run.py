"""Run an alignment suite: check everything, extract every model's features (cached), score, write results.

Order of work: the suite is checked offline (names, modalities, dataset, k < n), then every text model's
config is read (hub configs are small files) to confirm it has per-layer hidden states, then the data is
loaded and k < n checked again on its real size; only then are models loaded, one at a time, and their
features extracted into ``<results>/<suite>/work/features/`` (an ActivationCache kept on disk, not in git,
so a re-run reads them back). Results: ``stitching.prh.align.write_alignment``
plus ``sweep.csv``/``sweep.png``, ``summary.json`` and a generated ``README.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from stitching._utils import atomic_write, stable_hash
from stitching.bench.cache import ActivationCache
from stitching.bench.suite import SuiteError
from stitching.prh.align import AlignSettings, alignment_matrices, sweep, write_alignment
from stitching.prh.align_suite import (
    AlignSuite,
    TextEntry,
    VisionEntry,
    check_suite,
    hidden_state_problems,
    settings_problems,
)
from stitching.prh.features import FeatureSet, text_feature_set, vision_feature_set

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def settings_of(suite: AlignSuite) -> AlignSettings:
    """The suite's scoring settings."""
    return AlignSettings(
        metrics=tuple(suite.metrics),
        topk=suite.topk,
        prh_protocol=suite.prh_protocol,
        n_permutations=suite.permutations,
        seed=suite.seed,
        pairs=suite.pairs,
    )


def check_text_models(suite: AlignSuite) -> None:
    """Every text model's config has per-layer hidden states (read before any feature is extracted)."""
    problems = [
        p for key, entry in suite.text.items() for p in hidden_state_problems(key, entry, offline=False)
    ]
    if problems:
        raise SuiteError(suite.source_path or suite.name, problems)


def load_data(suite: AlignSuite) -> tuple[Any, dict[str, Any]]:
    """The samples (a dataset of image tensors, or a ``PairedImageText``) and a description for cache keys."""
    data = suite.data
    if data.paired is not None:
        from stitching.data.paired import load_paired

        pairs = load_paired(data.paired, data.limit, data.caption_index)
        content = stable_hash([[str(i) for i in pairs.images], list(pairs.captions)], 16)
        return pairs, {"paired": data.paired, "caption_index": data.caption_index, "content": content}
    from stitching.bench.data import build_datamodule, split_dataset

    dataset = split_dataset(build_datamodule(data.datamodule), data.split)
    n = len(dataset) if data.limit is None else min(len(dataset), data.limit)
    return Subset(dataset, range(n)), {"datamodule": data.datamodule, "split": data.split}


def _images(model: torch.nn.Module, data: Any, batch_size: int) -> DataLoader:
    """A loader of the model's inputs: the datamodule's tensors, or paired images through timm's transform."""
    from stitching.data.paired import PairedImageText

    if isinstance(data, PairedImageText):
        import timm.data

        transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
        data = data.image_dataset(transform)
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def vision_set(name: str, entry: VisionEntry, seed: int, data: Any, context: dict[str, Any]) -> FeatureSet:
    """Load one image model from the store and extract its features at every (chosen) cut."""
    from stitching.zoo import ModelSource, describe, load_model_with_info

    checkpoint = entry.checkpoint.format(seed=seed) if entry.checkpoint else None
    source = ModelSource(entry.name, entry.pretrained, checkpoint, entry.train, seed)
    model, info = load_model_with_info(source)
    model = model.to(context["device"])
    key = {"model": describe(source), "store_key": info.get("key"), "data": context["data"], "n": len(data)}
    fs = vision_feature_set(
        name, model, _images(model, data, context["batch_size"]), entry.cuts, entry.reduction,
        context["batch_size"], context["cache"], key,
    )  # fmt: skip
    competence = entry.competence if entry.competence is not None else info.get("test_acc")
    fs.info.update(model=entry.name, seed=seed, competence=competence, **_scalars(info))
    return fs


def _scalars(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str)) and k not in ("name", "seed")}


def load_language_model(entry: TextEntry, device: str) -> tuple[torch.nn.Module, Any]:
    """``AutoModel`` and ``AutoTokenizer`` (local directories offline), padding on the left and a pad token
    as PRH sets them (``models.load_tokenizer``), in the entry's dtype on ``device``."""
    from stitching.prh._optional import require

    transformers = require("transformers", "text models in an alignment suite")
    local = Path(entry.name).expanduser().is_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(entry.name, local_files_only=local)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from packaging.version import Version

    # transformers renamed torch_dtype to dtype in 4.56
    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = transformers.AutoModel.from_pretrained(
        entry.name, local_files_only=local, **{dtype_key: DTYPES[entry.dtype]}
    )
    return model.to(device).eval(), tokenizer


def text_set(name: str, entry: TextEntry, captions: list[str], context: dict[str, Any]) -> FeatureSet:
    """Load one text model and extract its pooled hidden states of the captions."""
    model, tokenizer = load_language_model(entry, context["device"])
    key = {"text_model": entry.name, "dtype": entry.dtype, "data": context["data"], "n": len(captions)}
    fs = text_feature_set(
        name, model, tokenizer, captions, entry.pooling, context["batch_size"], context["cache"], key
    )
    fs.info.update(
        model=entry.name, competence=entry.competence, parameters=sum(p.numel() for p in model.parameters())
    )
    return fs


def extract_all(suite: AlignSuite, data: Any, context: dict[str, Any]) -> list[FeatureSet]:
    """Every model's feature set, models loaded one at a time."""
    sets = []
    for key, entry in suite.vision.items():
        for seed in entry.seeds:
            name = key if len(entry.seeds) == 1 else f"{key}_s{seed}"
            sets.append(vision_set(name, entry, seed, data, context))
            print(f"  features: {name} ({len(sets[-1].layers)} layers)", flush=True)
    if suite.text:
        captions = list(data.captions)
        for key, entry in suite.text.items():
            sets.append(text_set(key, entry, captions, context))
            print(f"  features: {key} ({len(sets[-1].layers)} hidden states)", flush=True)
    return sets


def competence_order(sets: list[FeatureSet]) -> list[str]:
    """Names by increasing competence; models without one keep the suite's order, after the others."""
    known = sorted(
        (s for s in sets if s.info.get("competence") is not None), key=lambda s: s.info["competence"]
    )
    return [s.name for s in known] + [s.name for s in sets if s.info.get("competence") is None]


def run_align_suite(suite: AlignSuite, results: str | Path, device: str = "cpu") -> Path:
    """Run the suite (module docstring); returns its results directory."""
    started = time.perf_counter()
    check_suite(suite)
    check_text_models(suite)
    data, description = load_data(suite)
    problems = settings_problems(suite, len(data))
    if problems:
        raise SuiteError(suite.source_path or suite.name, problems)
    out = Path(results) / suite.name
    cache = ActivationCache(out / "work" / "features", memory_budget_gb=1.0, persist=True)
    context = {"device": device, "batch_size": suite.batch_size, "cache": cache, "data": description}
    sets = extract_all(suite, data, context)
    features_s = time.perf_counter() - started
    settings = settings_of(suite)
    result = alignment_matrices(sets, settings)
    order = competence_order(sets)
    write_alignment(out, result, order, suite.layer_plots)
    timings = {"features_s": features_s, "alignment_s": time.perf_counter() - started - features_s}
    if suite.sweep.ks or suite.sweep.ns:
        run_sweep(out, sets, suite)
    timings["total_s"] = time.perf_counter() - started
    write_summary(out, suite, sets, result, {**timings, "n": len(data), "order": order})
    return out


def run_sweep(out: Path, sets: list[FeatureSet], suite: AlignSuite) -> None:
    """``sweep.csv`` and ``sweep.png``: best-layer alignment against n for each k."""
    from dataclasses import replace

    from stitching.prh.align_plots import plot_sweep

    settings = replace(settings_of(suite), n_permutations=suite.sweep.permutations)
    table = sweep(sets, settings, suite.sweep.ks, suite.sweep.ns, suite.sweep.repeats)
    atomic_write(out / "sweep.csv", table.to_csv(index=False, float_format="%.6g"))
    plot_sweep(out / "sweep.png", table)


def write_summary(out: Path, suite: AlignSuite, sets: list[FeatureSet], result, info: dict[str, Any]) -> None:
    """``summary.json`` (settings, models, timings) and a generated ``README.md`` with the best pairs."""
    from stitching.prh.align_report import readme

    models = {s.name: {"modality": s.modality, "layers": len(s.layers), **s.info} for s in sets}
    summary = {"suite": suite.name, "settings": asdict(settings_of(suite)), "models": models, **info}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=str))
    atomic_write(out / "README.md", readme(suite, result, summary))
