"""Expand a suite into fully resolved cell configs, each with a stable id hashed from its content."""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import yaml

from stitching._utils import did_you_mean, stable_hash
from stitching.adapters.config import INITS
from stitching.bench.cell_config import BaseModel, Cell, CellConfig, SuiteRef
from stitching.bench.suite import CONTROLS, ModelEntry, Suite, SuiteError, load_suite
from stitching.core.training import OBJECTIVES


@cache
def model_cuts(name: str) -> tuple:
    """Cut points of an (untrained) model; cuts do not depend on weights."""
    from stitching.cuts import list_cuts
    from stitching.models import create_model

    return tuple(list_cuts(create_model(name, pretrained=False)))


def model_instance(key: str, entry: ModelEntry, seed: int) -> BaseModel:
    """One base model of the suite: its entry at one seed."""
    checkpoint = entry.checkpoint.format(seed=seed) if entry.checkpoint else None
    digest = train_digest(entry.train) if entry.train else None
    return BaseModel(key, entry.name, seed, entry.train, entry.pretrained, checkpoint, digest)


def train_digest(path: str) -> str:
    """16 hex digits over a base-training config's content, parsed (comments and layout do not count): what
    a cell id hashes in place of the config's path."""
    text = _train_file(path).read_text()
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError:
        content = text
    return stable_hash(content, 16)


def _train_file(path: str) -> Path:
    """A training config's path as the model store resolves it (as given, else from the repository)."""
    from stitching.zoo import _resolve_path  # the store's rule; stitching.zoo imports Lightning

    return _resolve_path(path)


def model_pairs(suite: Suite) -> list[tuple[BaseModel, BaseModel, str]]:
    """(source instance, target instance, kind) for every pair the suite asks for, in a stable order."""
    models = suite.models
    pairs: list[tuple[BaseModel, BaseModel, str]] = []
    spec = suite.pairs

    def add(src_key: str, src_seed: int, tgt_key: str, tgt_seed: int, kind: str) -> None:
        pairs.append(
            (
                model_instance(src_key, models[src_key], src_seed),
                model_instance(tgt_key, models[tgt_key], tgt_seed),
                kind,
            )
        )

    if spec.include_self:
        for key, entry in models.items():
            add(key, entry.seeds[0], key, entry.seeds[0], "self")
    if spec.mode == "explicit":
        for src_key, tgt_key in spec.explicit:
            kind = "same_arch" if models[src_key].name == models[tgt_key].name else "cross_arch"
            _add_seed_pairs(add, src_key, models[src_key], tgt_key, models[tgt_key], kind, spec.cross_seeds)
        return pairs
    for src_key, tgt_key in itertools.product(models, repeat=2):
        same = src_key == tgt_key
        if same and spec.mode in ("all", "same_arch"):
            for s, t in itertools.permutations(models[src_key].seeds, 2):
                add(src_key, s, tgt_key, t, "same_arch")
        elif not same and spec.mode in ("all", "cross_arch"):
            _add_seed_pairs(
                add, src_key, models[src_key], tgt_key, models[tgt_key], "cross_arch", spec.cross_seeds
            )
    return pairs


def _add_seed_pairs(add, src_key, src, tgt_key, tgt, kind, cross_seeds) -> None:
    if src_key == tgt_key:
        for s, t in itertools.permutations(src.seeds, 2):
            add(src_key, s, tgt_key, t, kind)
    elif cross_seeds == "first":
        add(src_key, src.seeds[0], tgt_key, tgt.seeds[0], kind)
    else:
        for s, t in zip(src.seeds, tgt.seeds, strict=False):
            add(src_key, s, tgt_key, t, kind)


def _select_cuts(suite: Suite, key: str, cuts: Sequence, problems: list[str]) -> list:
    """The suite's cuts for one model, as CutPoints, in the order the suite lists them."""
    by_name = {c.name: c for c in cuts}
    if key in suite.cuts.names:
        chosen = []
        for name in suite.cuts.names[key]:
            if name in by_name:
                chosen.append(by_name[name])
            else:
                hint = did_you_mean(name, by_name)
                problems.append(f"models.{key}: unknown cut {name!r}; {hint}valid cuts: {', '.join(by_name)}")
        return chosen
    chosen = []
    for depth in suite.cuts.depths:
        if not 0.0 <= depth <= 1.0:
            problems.append(f"cuts.depths: {depth} is outside [0, 1]")
            continue
        chosen.append(min(cuts, key=lambda c: (abs(c.depth - depth), c.depth)))
    return chosen


def load_and_expand(path: str | Path) -> tuple[Suite, list[Cell]]:
    """A suite file and its cells; unknown keys are listed with every other problem in one `SuiteError`."""
    try:
        suite, early = load_suite(path), []
    except SuiteError as err:
        if err.suite is None:  # wrong types or YAML: the rest cannot be checked yet
            raise
        suite, early = err.suite, err.problems
        suite.source_path = str(path)
    return suite, expand_suite(suite, early=early)


def expand_suite(
    suite: Suite, cut_lister: Callable[[str], Sequence] = model_cuts, early: Sequence[str] = ()
) -> list[Cell]:
    """Every cell of the suite as a resolved config with its ``cell_id``; all problems raised at once
    (``early``: those found while parsing it)."""
    problems = [*early, *validate_static(suite)]
    cuts_by_key: dict[str, list] = {}
    for key, entry in suite.models.items():
        try:
            cuts = cut_lister(entry.name)
        except Exception as err:  # unknown model or unsupported family: report, keep checking the rest
            problems.append(f"models.{key}: {err}")
            continue
        cuts_by_key[key] = _select_cuts(suite, key, cuts, problems)
    if problems:
        raise SuiteError(suite.source_path or suite.name, problems)

    cells = []
    ref = SuiteRef(suite.name, suite.version)
    for source, target, kind in model_pairs(suite):
        src_cuts, tgt_cuts = cuts_by_key[source.key], cuts_by_key[target.key]
        if suite.cuts.mode == "matrix":
            cut_pairs = list(itertools.product(src_cuts, tgt_cuts))
        else:
            cut_pairs = list(zip(src_cuts, tgt_cuts, strict=False))
        for (src_cut, tgt_cut), adapter, init, objective, stitch_seed in itertools.product(
            cut_pairs, suite.adapters, suite.inits, suite.objectives, suite.stitch_seeds
        ):
            if init == "identity" and src_cut.spec.channels != tgt_cut.spec.channels:
                continue  # identity init needs equal channels; other inits cover this cut pair
            config = CellConfig(
                dataset=suite.dataset,
                source=source,
                target=target,
                pair_kind=kind,
                source_cut=src_cut.name,
                target_cut=tgt_cut.name,
                source_depth=round(src_cut.depth, 4),
                target_depth=round(tgt_cut.depth, 4),
                adapter=adapter,
                init=init,
                stitch_seed=stitch_seed,
                recipe=suite.recipe,
                objective=objective,
                controls=tuple(suite.controls),
                metrics=tuple(suite.metrics),
                metric_reduction=suite.metric_reduction,
                metric_samples=suite.metric_samples,
                permutations=suite.permutations,
                cache_dtype=suite.activations.dtype,
                train_per_class=suite.activations.train_per_class,
                subset_seed=suite.activations.subset_seed,
            )
            cells.append(Cell(config, ref))
    return cells


def validate_static(suite: Suite) -> list[str]:
    """Problems that need no model: names of inits, controls, metrics, adapters, pairs, seeds."""
    problems = []
    if not suite.models:
        problems.append("models: the suite names no model")
    for key, entry in suite.models.items():
        if not entry.seeds:
            problems.append(f"models.{key}.seeds: give at least one seed")
        if entry.train and entry.pretrained:
            problems.append(f"models.{key}: 'train' and 'pretrained' exclude each other; choose one")
    for axis, values, valid in (
        ("inits", suite.inits, INITS),
        ("objectives", suite.objectives, OBJECTIVES),
        ("controls", suite.controls, CONTROLS),
    ):
        for value in values:
            if value not in valid:
                hint = did_you_mean(value, valid)
                problems.append(f"{axis}: unknown {axis[:-1]} {value!r}; {hint}valid: {', '.join(valid)}")
    for src_key, tgt_key in suite.pairs.explicit:
        for k in (src_key, tgt_key):
            if k not in suite.models:
                problems.append(f"pairs.explicit: unknown model key {k!r}; keys: {', '.join(suite.models)}")
    for key in suite.cuts.names:
        if key not in suite.models:
            problems.append(f"cuts.names: unknown model key {key!r}; keys: {', '.join(suite.models)}")
    problems += _range_problems(suite)
    problems += _adapter_problems(suite.adapters)
    problems += _metric_problems(suite.metrics, suite.metric_reduction)
    problems += _dataset_problems(suite.dataset)
    return problems


def _adapter_problems(adapters: list[dict]) -> list[str]:
    from stitching.adapters import AdapterConfig

    problems = []
    for i, options in enumerate(adapters):
        if "init" in options:
            problems.append(
                f"adapters[{i}]: set initialisations in the suite's 'inits' list, not per adapter"
            )
            continue
        try:
            AdapterConfig(**options)
        except (TypeError, ValueError) as err:
            problems.append(f"adapters[{i}]: {err}")
    return problems


def _metric_problems(metrics: list[str], reduction: str) -> list[str]:
    from stitching.metrics import list_metrics

    known = list_metrics()
    problems = []
    for name in metrics:
        if name not in known:
            hint = did_you_mean(name, known)
            problems.append(f"metrics: unknown metric {name!r}; {hint}valid: {', '.join(known)}")
    return problems


def _dataset_problems(dataset: dict) -> list[str]:
    # imported here: stitching.bench.data pulls in Lightning, which listing or sweeping a suite does not need
    from stitching.bench.data import dataset_problems

    return dataset_problems(dataset) or _dataset_argument_problems(dataset)


def _dataset_class(dataset: dict) -> type:
    module, _, name = dataset["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def _dataset_argument_problems(dataset: dict) -> list[str]:
    """Arguments the datamodule does not take (a misspelling), and required ones the suite leaves out."""
    cls, init_args = _dataset_class(dataset), dataset.get("init_args") or {}
    if not isinstance(init_args, dict):
        return [f"dataset.init_args: expected a mapping, got {init_args!r}"]
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problems = [
        f"dataset.init_args: {cls.__name__} has no argument {key!r}; {did_you_mean(key, named)}"
        f"valid: {', '.join(named)}"
        for key in init_args
        if key not in params and not takes_any
    ]
    problems += [
        f"dataset.init_args: {cls.__name__} needs {n!r}"
        for n in named
        if params[n].default is inspect.Parameter.empty and n not in init_args
    ]
    return problems


def dataset_root_problems(suite: Suite) -> list[str]:
    """A dataset folder (``root``, or ``data_dir`` without ``download``) missing on this machine: checked
    by runs whose cells run here, before any cell (a login node planning a cluster run may lack it)."""
    try:
        params = inspect.signature(_dataset_class(suite.dataset).__init__).parameters
    except (ImportError, AttributeError, ValueError, KeyError):
        return []  # reported by validate_static
    given = suite.dataset.get("init_args") or {}
    args = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty} | given
    if args.get("download"):
        return []
    return [
        f"dataset.init_args.{name}: no folder {str(args[name])!r} here; give the dataset's folder"
        + (" or set download: true" if "download" in params else "")
        for name in ("root", "data_dir")
        if isinstance(args.get(name), str) and not Path(args[name]).expanduser().is_dir()
    ]


def _range_problems(suite: Suite) -> list[str]:
    """Values outside their range, duplicated seeds and models, and a suite name that is not a plain
    directory name: each would fail late, or silently compute the wrong thing."""
    r = suite.recipe
    checks = [
        (r.epochs >= 1, f"recipe.epochs: {r.epochs}; give at least 1"),
        (r.batch_size >= 1, f"recipe.batch_size: {r.batch_size}; give at least 1"),
        (r.lr > 0 and math.isfinite(r.lr), f"recipe.lr: {r.lr}; give a positive finite learning rate"),
        (r.weight_decay >= 0, f"recipe.weight_decay: {r.weight_decay}; give 0 or more"),
        (r.patience is None or r.patience >= 1, f"recipe.patience: {r.patience}; give at least 1, or null"),
        (suite.metric_samples >= 2, f"metric_samples: {suite.metric_samples}; the metrics need at least 2"),
        (suite.permutations >= 1, f"permutations: {suite.permutations}; give at least 1"),
        (_plain_name(suite.name), f"name: {suite.name!r} is not a plain directory name (results go to "
                                  "<results>/<name>/); use letters, digits, '-', '_' and '.'"),
    ]  # fmt: skip
    problems = [message for ok, message in checks if not ok]
    for axis, values in (("stitch_seeds", suite.stitch_seeds), *(
        (f"models.{key}.seeds", entry.seeds) for key, entry in suite.models.items()
    )):
        if len(set(values)) != len(values):
            problems.append(f"{axis}: {values} repeats a seed; each seed is a cell of its own")
    seen: dict[tuple, str] = {}
    for key, entry in suite.models.items():
        same = (entry.name, entry.train, entry.pretrained, entry.checkpoint, tuple(entry.seeds))
        if same in seen:
            problems.append(f"models.{key}: the same model as models.{seen[same]}; keep one key")
        seen.setdefault(same, key)
        for field_name, path, resolve in (
            ("train", entry.train, _train_file),
            ("checkpoint", entry.checkpoint, Path),
        ):
            problem = _missing_file(path, entry.seeds, resolve) if path else None
            if problem:
                problems.append(f"models.{key}.{field_name}: {problem}")
    return problems


def _missing_file(template: str, seeds: list[int], resolve: Callable[[str], Path] = Path) -> str | None:
    """Why ``template`` (``{seed}`` filled in per seed, then ``resolve``d) does not name an existing file, or
    None."""
    for seed in seeds:
        try:
            path = template.format(seed=seed)
        except (KeyError, IndexError, ValueError) as err:
            return f"{template!r} is not a valid template ({err}); the only placeholder is {{seed}}"
        if not resolve(path).is_file():
            return f"no file {path!r} (seed {seed})"
    return None


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and all(c.isalnum() or c in "-_." for c in name)
