"""Benchmark suites: a YAML file that names models, pairs, cuts, adapters, seeds and the dataset.

``load_suite(path)`` parses and type-checks the file with jsonargparse, one key at a time so that one
``SuiteError`` lists every problem at once; ``stitching.bench.grid`` then checks it against the real models
(names, cuts, adapter options), before any training starts.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from jsonargparse import ArgumentParser

from stitching._utils import did_you_mean
from stitching.core.optim import Recipe

PairMode = Literal["all", "same_arch", "cross_arch", "explicit"]
CutMode = Literal["matched", "matrix"]


class SuiteError(ValueError):
    """A suite file has problems; the message lists all of them."""

    def __init__(self, source: str, problems: list[str], suite: Suite | None = None) -> None:
        self.problems = problems
        self.suite = suite
        """The suite as parsed when its only problems were unknown keys (checked further by the grid)."""
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
class ActivationSettings:
    """How the fronts' activations are kept: a suite's ``activations`` section (see the plan,
    ``stitching bench SUITE --dry-run``)."""

    path: Literal["auto", "cached", "streamed"] = "auto"
    """``auto``: cache what fits the budgets (``--cache.memory_gb``/``--cache.disk_gb``), stream the rest;
    ``cached``: refuse to run when it does not fit; ``streamed``: run the frozen fronts on the fly for every
    training split. The results are the same on either path (``--cache.path`` overrides it)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Cached activations' dtype: bfloat16/float16 halve the bytes (part of each cell's config)."""
    train_per_class: int | None = None
    """Train (and fit) adapters on this many training images per class, drawn with ``subset_seed``
    (``null``: the whole training split); validation and test splits stay whole."""
    subset_seed: int = 0
    """Seed of the training subset's draw (recorded in every cell)."""
    split_sizes: dict[str, int] = field(default_factory=dict)
    """Images per split (``train``, ``val``, ``test``) for the plan when the dataset is not on this machine
    (e.g. planning an ImageNet suite on a login node)."""
    num_classes: int | None = None
    """Classes, for the plan of a training subset when the dataset is not on this machine."""


Control = Literal["random_source", "clustered_noise"]
"""A control stitched beside every cell."""


@dataclass
class Suite:
    """A whole benchmark: expanded into cells by :func:`stitching.bench.grid.expand_suite`."""

    name: str
    """Suite name: the results go to ``<results>/<name>/``."""
    version: str
    """Suite version, part of every cell's config (bump it when the suite's meaning changes)."""
    dataset: dict[str, Any]
    """``{class_path: ..., init_args: {...}}`` of a LightningDataModule (as in LightningCLI configs)."""
    models: dict[str, ModelEntry]
    """The models by key (the key names the model in pairs, cuts and the leaderboard)."""
    description: str = ""
    """Free text shown nowhere but in the file."""
    pairs: PairSpec = field(default_factory=PairSpec)
    """Which (source, target) model pairs are stitched."""
    cuts: CutSpec = field(default_factory=CutSpec)
    """Which cut points each pair is stitched at."""
    adapters: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    """Adapter options (``stitching.adapters.AdapterConfig`` fields); ``{}`` is the default adapter."""
    inits: list[str] = field(default_factory=lambda: ["lstsq"])
    """Adapter initialisations, each a cell of its own (``stitching.adapters.INITS``)."""
    stitch_seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of adapter training, each a cell of its own."""
    recipe: Recipe = field(default_factory=Recipe)
    """How every adapter is trained (optimiser, schedule, epochs, batch size)."""
    objectives: list[str] = field(default_factory=lambda: ["task"])
    """What adapters are trained for, each a cell of its own: ``task`` (the target's loss through its back),
    ``match`` (squared error to the target's activation at its cut), ``task+match``."""
    controls: list[str] = field(default_factory=lambda: ["random_source"])
    """Controls trained and scored beside each cell exactly like the real source: ``random_source`` (an
    untrained source of the same architecture) and ``clustered_noise`` (per-class Gaussian clusters in the
    source activation's shape: the label and nothing else about the image; Smith et al., ICML 2025)."""
    metrics: list[str] = field(default_factory=list)
    """Alignment metrics between the activations at the two cuts (``stitching.metrics.list_metrics()``)."""
    metric_reduction: Literal["mean", "flatten", "cls"] = "mean"
    """How activations are reduced to (N, D) for the alignment metrics: ``mean``, ``flatten`` or ``cls``."""
    metric_samples: int = 1000
    """At most this many test samples enter the alignment metrics."""
    permutations: int = 1000
    """Permutations of the test samples in each alignment metric's permutation test
    (``stitching.metrics.permutation_test``): records get ``<metric>_p``, ``_null95`` and ``_calibrated``."""
    activations: ActivationSettings = field(default_factory=ActivationSettings)
    """How front activations are kept (cached or streamed, their dtype) and the training subset."""
    source_path: str = ""
    """Where the suite was loaded from (filled in by ``load_suite``)."""


CONTROLS: tuple[str, ...] = get_args(Control)


def load_suite(path: str | Path) -> Suite:
    """Parse a suite YAML file; unknown keys, wrong types and missing keys are reported all at once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {str(path)!r} not found")
    suite = suite_from_dict(read_yaml(path), str(path))
    suite.source_path = str(path)
    return suite


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a syntax error or a duplicated key is one `SuiteError` naming file and line."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(str(path), [f"YAML error at {where}: {what}"]) from None


def suite_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Suite:
    """A `Suite` from its mapping; raises one `SuiteError` that lists every problem found."""
    problems: list[str] = []
    suite = _section(Suite, raw, "", problems)
    if problems:
        raise SuiteError(source, problems, suite)
    return suite


def _section(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    """Dataclass ``tp`` from the mapping ``value``, each key checked on its own so that all problems show."""
    here = where or "suite"
    if not isinstance(value, dict):
        problems.append(f"{here}: expected a mapping, got {_show(value)}")
        return None
    hints = typing.get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init and f.name != "source_path"}
    for key in value:
        if key not in fields:
            hint = did_you_mean(key, fields).strip() or f"valid: {', '.join(fields)}"
            problems.append(f"{here}: unknown key {key!r} ({hint})")
    kwargs, count = {}, len(problems)
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _value(hints[name], value[name], f"{where}.{name}".lstrip("."), problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{here}: missing required key {name!r}")
    return tp(**kwargs) if len(problems) == count else None


def _value(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as type ``tp``: dataclass sections key by key, anything else by jsonargparse."""
    if dataclasses.is_dataclass(tp):
        return _section(tp, value, where, problems)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is dict and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {_show(value)}")
            return None
        return {k: _section(args[1], v, f"{where}.{k}", problems) for k, v in value.items()}
    if str in _members(tp) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # ``version: 1`` means "1"
    if value is None:
        if tp is Any or type(None) in _members(tp):
            return None
        problems.append(f"{where}: expected {_describe(tp)}, got null")
        return None
    try:  # a copy: jsonargparse converts lists in place
        return _parser(tp).parse_object({"value": copy.deepcopy(value)}).value
    except argparse.ArgumentError:
        if typing.get_origin(tp) is Literal:
            problems.append(f"{where}: {value!r} is not one of {_describe(tp).removeprefix('one of ')}")
        else:
            problems.append(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        return None


@cache
def _parser(tp: Any) -> ArgumentParser:
    """A jsonargparse parser of one value of type ``tp``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=tp)
    return parser


def _members(tp: Any) -> tuple:
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return typing.get_args(tp) if union else (tp,)


def _describe(tp: Any) -> str:
    """``int``, ``a list of int``, ``one of 'a', 'b'``: a type as a suite's author reads it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    return "anything" if tp is Any else getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
