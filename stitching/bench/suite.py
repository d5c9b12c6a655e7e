"""Benchmark suites: a YAML file that names models, pairs, cuts, adapters, seeds and the dataset.

``load_suite(path)`` parses and type-checks the file; ``validate_suite(suite)`` checks it against the real
models (names, cuts, adapter options) and raises one ``SuiteError`` that lists every problem at once, before
any training starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stitching.core.optim import Recipe

PairMode = Literal["all", "same_arch", "cross_arch", "explicit"]
CutMode = Literal["matched", "matrix"]


class SuiteError(ValueError):
    """A suite file has problems; the message lists all of them."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) found before any training:\n{lines}")


@dataclass
class ModelEntry:
    """A model of the suite, instantiated once per seed."""

    name: str
    """timm or ``mini_`` model name."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Base-model seeds; each seed is a separately trained (or loaded) model."""
    train: str | None = None
    """Base-training config (``configs/train/*.yaml``): the model is trained on first use and stored."""
    pretrained: bool = False
    """Load timm's pretrained weights (needs internet or a populated HF cache)."""
    checkpoint: str | None = None
    """Local weights file or checkpoint; ``{seed}`` is replaced by the seed."""


@dataclass
class PairSpec:
    """Which (source, target) model pairs to stitch."""

    mode: PairMode = "all"
    """``all`` ordered pairs of keys, ``same_arch`` seed pairs only, ``cross_arch`` only, or ``explicit``."""
    include_self: bool = True
    """Also stitch each model into itself (first seed): a control whose penalty should be about 0."""
    cross_seeds: Literal["first", "matched"] = "first"
    """Cross-architecture pairs use the first seed of each model, or every seed index both models have."""
    explicit: list[list[str]] = field(default_factory=list)
    """With ``mode: explicit``: ``[source_key, target_key]`` pairs."""


@dataclass
class CutSpec:
    """Which cut points to stitch at."""

    depths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """Relative depths in [0, 1]; each resolves to the model's nearest cut."""
    names: dict[str, list[str]] = field(default_factory=dict)
    """Explicit cut names per model key (overrides ``depths`` for that model)."""
    mode: CutMode = "matched"
    """``matched``: source and target cut at the same depth index; ``matrix``: every source x target cut."""


@dataclass
class Suite:
    """A whole benchmark: expanded into cells by :func:`stitching.bench.grid.expand_suite`."""

    name: str
    version: str
    dataset: dict[str, Any]
    """``{class_path: ..., init_args: {...}}`` of a LightningDataModule (as in LightningCLI configs)."""
    models: dict[str, ModelEntry]
    description: str = ""
    pairs: PairSpec = field(default_factory=PairSpec)
    cuts: CutSpec = field(default_factory=CutSpec)
    adapters: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    """Adapter options (``stitching.adapters.AdapterConfig`` fields); ``{}`` is the default adapter."""
    inits: list[str] = field(default_factory=lambda: ["lstsq"])
    stitch_seeds: list[int] = field(default_factory=lambda: [0])
    recipe: Recipe = field(default_factory=Recipe)
    controls: list[str] = field(default_factory=lambda: ["random_source"])
    metrics: list[str] = field(default_factory=list)
    """Alignment metrics between the activations at the two cuts (``stitching.metrics.list_metrics()``)."""
    metric_reduction: str = "mean"
    """How activations are reduced to (N, D) for the alignment metrics: ``mean``, ``flatten`` or ``cls``."""
    metric_samples: int = 1000
    """At most this many test samples enter the alignment metrics."""
    source_path: str = ""
    """Where the suite was loaded from (filled in by ``load_suite``)."""


CONTROLS = ("random_source",)


def load_suite(path: str | Path) -> Suite:
    """Parse a suite YAML file; unknown keys and wrong types are reported all at once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {str(path)!r} not found")
    raw = yaml.safe_load(path.read_text())
    problems: list[str] = []
    suite = _build(Suite, raw, "suite", problems)
    if problems:
        raise SuiteError(str(path), problems)
    suite.source_path = str(path)
    return suite


def suite_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Suite:
    problems: list[str] = []
    suite = _build(Suite, raw, "suite", problems)
    if problems:
        raise SuiteError(source, problems)
    return suite


def _build(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    """Convert ``value`` to type ``tp`` (dataclasses, lists, dicts, literals), collecting problems."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return None
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init and f.name != "source_path"}
        for key in value:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else f" (valid: {', '.join(fields)})"
                problems.append(f"{where}: unknown key {key!r}{hint}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _build(hints[name], value[name], f"{where}.{name}", problems)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}: missing required key {name!r}")
        try:
            return tp(**kwargs)
        except TypeError:
            return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(repr, typing.get_args(tp)))
            problems.append(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, where, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return []
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return {}
        _, item = typing.get_args(tp)
        return {k: _build(item, v, f"{where}.{k}", problems) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.append(f"{where}: expected {tp.__name__}, got {value!r}")
    return value
