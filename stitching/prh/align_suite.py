"""Alignment suites: a YAML file naming vision models, text models, a dataset, metrics, k, n and permutations.

Parsed key by key with the benchmark suites' parser (``stitching.bench.suite``: every problem reported at
once), then checked offline by :func:`suite_problems`: model names and their modality (a text model listed
as a vision model or the reverse), the dataset's two sides, ``k < n``. Nothing is downloaded or extracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stitching._utils import did_you_mean
from stitching.bench.suite import SuiteError, _section, read_yaml

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class VisionEntry:
    """An image model: a timm or ``mini_`` name, from the model store (``stitching.zoo.ModelSource``)."""

    name: str
    pretrained: bool = False
    """timm's pretrained weights (internet or HF cache)."""
    checkpoint: str | None = None
    train: str | None = None
    """Base-training config: trained on first use, then read from the model store."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """One feature set per seed (named ``<key>_s<seed>`` when there are several)."""
    reduction: Literal["mean", "flatten", "cls"] = "mean"
    """Per cut: spatial / patch-token mean, flatten, or the class token (PRH's choice for ViTs)."""
    cuts: list[str] | None = None
    """Cut names to use (default: every cut)."""
    competence: float | None = None
    """Orders the heatmaps (default: the stored test accuracy of trained models)."""


@dataclass
class TextEntry:
    """A Hugging Face ``transformers`` model: a hub name or a local directory."""

    name: str
    pooling: Literal["mean", "last"] = "mean"
    """Masked mean over tokens (PRH's ``avg``) or the last token."""
    dtype: Dtype = "float32"
    competence: float | None = None


@dataclass
class DataEntry:
    """The samples every model sees: a datamodule's split (vision only) or a paired image-text set."""

    datamodule: dict[str, Any] | None = None
    """``{class_path, init_args}`` of a LightningDataModule (images only)."""
    split: Literal["train", "val", "test"] = "test"
    paired: str | None = None
    """JSONL, folder or ``hf:OWNER/NAME@REVISION`` (``stitching.data.paired``)."""
    caption_index: int = 0
    limit: int | None = None
    """Use the first ``limit`` samples."""


@dataclass
class SweepEntry:
    """Alignment as a function of k and n (empty lists: no sweep)."""

    ks: list[int] = field(default_factory=list)
    ns: list[int] = field(default_factory=list)
    repeats: int = 1
    """Random subsets per n below the full set."""
    permutations: int = 0
    """Permutations per sweep point (0: raw scores only; the sweep then costs little)."""


@dataclass
class AlignSuite:
    """A many-model alignment experiment (``stitching align SUITE.yaml``)."""

    name: str
    data: DataEntry
    vision: dict[str, VisionEntry] = field(default_factory=dict)
    text: dict[str, TextEntry] = field(default_factory=dict)
    description: str = ""
    metrics: list[str] = field(default_factory=lambda: ["mutual_knn"])
    topk: int = 10
    prh_protocol: bool = True
    """Clip at the 0.95 quantile of |x| and L2-normalise rows (minyoungg/platonic-rep)."""
    pairs: Literal["all", "cross_modal"] = "all"
    permutations: int = 200
    """Permutations of the max-over-layer-pairs null of every pair."""
    seed: int = 0
    batch_size: int = 64
    sweep: SweepEntry = field(default_factory=SweepEntry)
    layer_plots: bool = True
    """One layer-by-layer heatmap per pair and metric (``layers/``); the scores are in ``layers.csv``."""
    source_path: str = ""


def load_align_suite(path: str | Path) -> AlignSuite:
    """Parse a suite file; unknown keys, wrong types and missing keys are reported all at once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment suite {str(path)!r} not found")
    problems: list[str] = []
    suite = _section(AlignSuite, read_yaml(path), "", problems)
    if problems:
        raise SuiteError(str(path), problems)
    suite.source_path = str(path)
    return suite


def _is_timm(name: str) -> bool:
    """A timm / ``mini_`` name, a timm hub or local-dir reference, or a checkpoint file."""
    import timm

    import stitching.models  # noqa: F401  (registers the mini_* variants)
    from stitching.zoo import CHECKPOINT_SUFFIXES

    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or name.endswith(CHECKPOINT_SUFFIXES):
        return True
    return timm.is_model(name)


def _looks_like_transformers(name: str) -> bool:
    path = Path(name).expanduser()
    return (path / "config.json").is_file() or (not path.exists() and name.count("/") == 1)


def vision_problems(key: str, entry: VisionEntry) -> list[str]:
    """A vision entry that names a text model, or no known image model."""
    where = f"vision.{key}"
    if _is_timm(entry.name):
        return []
    if _looks_like_transformers(entry.name):
        return [f"{where}: {entry.name!r} is a Hugging Face transformers (text) model, not an image model; "
                "list it under text:"]  # fmt: skip
    from stitching.models import list_models

    hint = did_you_mean(entry.name, list_models(), n=3).strip() or "see stitching.models.list_models()"
    return [f"{where}: unknown image model {entry.name!r} ({hint})"]


def text_problems(key: str, entry: TextEntry) -> list[str]:
    """A text entry that names an image model, or a local directory without a transformers config."""
    where = f"text.{key}"
    if _is_timm(entry.name):
        return [f"{where}: {entry.name!r} is an image model (timm), not a text model; list it under vision:"]
    path = Path(entry.name).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        return [f"{where}: {entry.name!r} has no config.json: not a transformers model directory"]
    if not path.exists() and entry.name.count("/") != 1:
        return [f"{where}: {entry.name!r} is neither a local directory nor a hub name OWNER/NAME"]
    return hidden_state_problems(key, entry, offline=True)


def hidden_state_problems(key: str, entry: TextEntry, offline: bool) -> list[str]:
    """A text model whose config has no per-layer hidden states (no ``num_hidden_layers``).

    Reads the config through ``transformers.AutoConfig``: a local directory's always, a hub model's from the
    HF cache only when ``offline`` (a dry run never downloads; the run itself reads it before extracting).
    """
    from stitching.prh._optional import require

    transformers = require("transformers", "text models in an alignment suite")
    local = Path(entry.name).expanduser().is_dir()
    try:
        config = transformers.AutoConfig.from_pretrained(entry.name, local_files_only=local or offline)
    except OSError as error:
        if offline and not local:
            return []  # not cached: checked when the run reads it
        return [f"text.{key}: cannot read the config of {entry.name!r}: {error}"]
    except ValueError as error:  # a config.json transformers does not know
        return [f"text.{key}: {entry.name!r} is not a transformers model: {error}"]
    if not isinstance(getattr(config, "num_hidden_layers", None), int):
        return [
            f"text.{key}: {entry.name!r} ({type(config).__name__}) has no per-layer hidden states (no "
            "num_hidden_layers); use a transformers encoder or decoder, e.g. through AutoModel"
        ]
    return []


def data_problems(suite: AlignSuite) -> tuple[list[str], int | None]:
    """Problems of the data section, and the number of samples when it is known without downloading."""
    from stitching.data.paired import PairedDataError, paired_size

    data = suite.data
    if (data.datamodule is None) == (data.paired is None):
        return ["data: give exactly one of datamodule (images) or paired (image-text pairs)"], None
    if suite.text and data.paired is None:
        return ["data: text models need a paired image-text dataset (data.paired), not a datamodule"], None
    if data.datamodule is not None:
        from stitching.bench.data import dataset_problems

        return dataset_problems(data.datamodule), data.limit
    try:
        n = paired_size(data.paired, data.caption_index)
    except (PairedDataError, FileNotFoundError) as error:
        return [f"data.paired: {error}"], None
    return [], n if data.limit is None or n is None else min(n, data.limit)


def settings_problems(suite: AlignSuite, n: int | None) -> list[str]:
    """Metric names, k, permutations, pairs and sweep values (``k < n`` where n is known)."""
    from stitching.metrics import list_metrics
    from stitching.prh.align import takes_topk

    problems = []
    for metric in suite.metrics:
        if metric not in list_metrics():
            hint = did_you_mean(metric, list_metrics()).strip() or f"valid: {', '.join(list_metrics())}"
            problems.append(f"metrics: unknown metric {metric!r} ({hint})")
    knn = any(m in list_metrics() and takes_topk(m) for m in suite.metrics)
    for k in [suite.topk, *suite.sweep.ks] if knn else []:
        if k < 1 or (n is not None and k >= n):
            problems.append(f"topk: k-NN metrics need 1 <= k < n (samples), got k={k} and n={n}")
    if n is not None and any(not 2 <= m <= n for m in suite.sweep.ns):
        problems.append(
            f"sweep.ns: every n must be in [2, {n}] (the samples available), got {suite.sweep.ns}"
        )
    if suite.permutations < 0 or suite.sweep.permutations < 0:
        problems.append("permutations: must be >= 0")
    if suite.pairs == "cross_modal" and not (suite.vision and suite.text):
        problems.append("pairs: cross_modal needs both vision and text models")
    if len(model_keys(suite)) < 2:
        problems.append("vision/text: list at least two models")
    return problems


def model_keys(suite: AlignSuite) -> list[str]:
    """Feature-set names: one per vision model and seed, one per text model."""
    keys = []
    for key, entry in suite.vision.items():
        keys += [key] if len(entry.seeds) == 1 else [f"{key}_s{s}" for s in entry.seeds]
    return keys + list(suite.text)


def suite_problems(suite: AlignSuite) -> tuple[list[str], int | None]:
    """Every problem found offline (nothing downloaded or extracted), and n when known."""
    problems, n = data_problems(suite)
    for key, entry in suite.vision.items():
        problems += vision_problems(key, entry)
    for key, entry in suite.text.items():
        problems += text_problems(key, entry)
    clash = sorted(set(suite.vision) & set(suite.text))
    if clash:
        problems.append(f"vision/text: keys {clash} name both a vision and a text model")
    return problems + settings_problems(suite, n), n


def check_suite(suite: AlignSuite) -> int | None:
    """Raise one :class:`SuiteError` listing every problem; return n when known."""
    problems, n = suite_problems(suite)
    if problems:
        raise SuiteError(suite.source_path or suite.name, problems)
    return n


def _stored(entry: VisionEntry) -> str:
    """Which seeds of a store-trained entry are in the model store (the others train on first use)."""
    from stitching.zoo import ModelSource, is_stored

    missing = [s for s in entry.seeds if not is_stored(ModelSource(entry.name, train=entry.train, seed=s))]
    return "all stored" if not missing else f"seeds {missing} not stored: trained on first use"


def plan(suite: AlignSuite, n: int | None) -> str:
    """What a run would do, in words (printed by ``--dry-run``)."""
    keys = model_keys(suite)
    n_text = f"{n}" if n is not None else "unknown until loaded"
    lines = [
        f"alignment suite {suite.name!r}: {len(keys)} feature sets ({len(suite.vision)} vision, "
        f"{len(suite.text)} text), n = {n_text}",
        f"  data: {suite.data.paired or suite.data.datamodule['class_path']} "
        f"({'paired' if suite.data.paired else suite.data.split + ' split'}"
        f"{f', first {suite.data.limit}' if suite.data.limit else ''})",
    ]
    for key, entry in suite.vision.items():
        weights = "pretrained" if entry.pretrained else entry.train or entry.checkpoint or "random init"
        if entry.train:
            weights += f", {_stored(entry)}"
        lines.append(f"  vision {key}: {entry.name} ({weights}; seeds {entry.seeds}; {entry.reduction})")
    for key, entry in suite.text.items():
        lines.append(f"  text   {key}: {entry.name} ({entry.pooling} pooling, {entry.dtype})")
    lines.append(
        f"  metrics {suite.metrics}, k = {suite.topk}, "
        f"{'PRH protocol' if suite.prh_protocol else 'raw features'}, pairs: {suite.pairs}, "
        f"{suite.permutations} permutations (max over layer pairs)"
    )
    if suite.sweep.ks or suite.sweep.ns:
        lines.append(f"  sweep: k in {suite.sweep.ks or [suite.topk]}, n in {suite.sweep.ns or ['all']}")
    return "\n".join(lines)
