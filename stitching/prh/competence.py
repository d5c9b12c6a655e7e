"""The competence suite: model families trained to several competence levels, a task battery, calibrated
alignment and stitching at a matched depth (the PRH claim "all strong models are alike", offline).

A level is a training budget: each family lists the epochs of its levels, and every (family, level, seed) is
a full run of the family's base-training config (``configs/train/*.yaml``) with ``trainer.max_epochs`` set
to that budget, so each model ends its own cosine schedule. Every run goes through the model store
(``stitching.zoo``): it is trained on first use and reused after. ``load_competence_suite`` checks the whole
file before anything is trained and raises one ``SuiteError`` listing every problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stitching._utils import atomic_write, did_you_mean
from stitching.bench.suite import SuiteError, _section, read_yaml
from stitching.core.optim import Recipe
from stitching.prh.competence_tasks import TASK_NAMES, TASKS

DEFAULT_SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "prh" / "digits_competence.yaml"
StitchKind = Literal["cross_family", "seed_pairs"]


@dataclass
class FamilyEntry:
    """One architecture family at several competence levels and seeds."""

    name: str
    """A ``mini_*`` or timm model name."""
    train: str
    """Its base-training config (``configs/train/*.yaml``)."""
    epochs: list[int]
    """Training budget of each level, increasing; each at most the config's ``trainer.max_epochs``."""
    seeds: list[int] = field(default_factory=lambda: [0, 1])


@dataclass
class Battery:
    """The task battery: linear probes on the frozen final features (the VTAB analogue)."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    """Derived digits tasks (``stitching.prh.competence_tasks.TASKS``)."""
    threshold: float = 0.9
    """A task counts as solved when its probe's balanced test accuracy reaches this."""
    ridge: float = 1e-3
    """L2 penalty of the least-squares probe, per training sample, on standardised features."""


@dataclass
class AlignmentSpec:
    """Which features every model pair is aligned on, and how (settings of ``stitching.prh.align``)."""

    metrics: list[str] = field(default_factory=lambda: ["mutual_knn", "linear_cka"])
    topk: int = 10
    permutations: int = 50
    """Permutations of the max-over-layer-pairs null of each model pair."""
    depths: list[float] | None = field(default_factory=lambda: [0.5, 0.75, 1.0])
    """Relative depths of the cuts to compare (nearest cut each); ``null``: every cut."""
    split: Literal["train", "val", "test"] = "test"
    samples: int | None = None
    """Use the first ``samples`` images of the split (``null``: all)."""
    prh_protocol: bool = True
    """Clip at the 0.95 quantile of |x| and L2-normalise rows first (the PRH paper's preprocessing)."""


@dataclass
class StitchSpec:
    """Stitching at one matched depth, per level: which pairs, and the (short) adapter recipe."""

    depth: float = 0.5
    kinds: list[StitchKind] = field(default_factory=lambda: ["cross_family", "seed_pairs"])
    """``cross_family``: every unordered pair of families (first seeds, in the order the suite lists the
    families) at each level; ``seed_pairs``: each family's first seed into its second at each level."""
    recipe: Recipe = field(default_factory=lambda: Recipe(epochs=3, lr=0.003, weight_decay=0.0))
    adapter: dict[str, Any] = field(default_factory=lambda: {"norm": "bn"})
    enabled: bool = True


@dataclass
class CompetenceSuite:
    """The whole experiment (``benchmarks/prh/digits_competence.yaml``)."""

    name: str
    dataset: dict[str, Any]
    """``{class_path, init_args}`` of a LightningDataModule (as in bench suites)."""
    models: dict[str, FamilyEntry]
    battery: Battery = field(default_factory=Battery)
    alignment: AlignmentSpec = field(default_factory=AlignmentSpec)
    stitching: StitchSpec = field(default_factory=StitchSpec)
    description: str = ""

    @property
    def n_levels(self) -> int:
        return len(next(iter(self.models.values())).epochs)


@dataclass(frozen=True)
class ModelSpec:
    """One trained model of the suite: a family at one level and seed."""

    key: str
    family: str
    name: str
    level: int
    epochs: int
    seed: int
    train: str
    """The generated training config of this level (``<out>/train_configs/``)."""

    @property
    def label(self) -> str:
        return f"{self.family}_e{self.epochs}_s{self.seed}"


def load_competence_suite(path: str | Path) -> CompetenceSuite:
    """Parse and check a competence suite file; every problem is listed in one ``SuiteError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"competence suite {str(path)!r} not found; the default: {DEFAULT_SUITE}")
    return competence_suite_from_dict(read_yaml(path), str(path))


def competence_suite_from_dict(raw: Any, source: str = "<dict>") -> CompetenceSuite:
    """A checked ``CompetenceSuite`` from its mapping (types, names, ranges, training configs)."""
    problems: list[str] = []
    suite = _section(CompetenceSuite, raw, "", problems)
    if suite is not None:
        problems += suite_problems(suite)
    if problems:
        raise SuiteError(source, problems)
    return suite


def suite_problems(suite: CompetenceSuite) -> list[str]:
    """Problems no type check catches: unknown model names and tasks, levels out of range, bad settings."""
    from stitching.bench.data import dataset_problems

    problems = list(dataset_problems(suite.dataset))
    if not suite.models:
        problems.append("models: give at least one family")
    levels = {key: len(entry.epochs) for key, entry in suite.models.items()}
    if len(set(levels.values())) > 1:
        problems.append(f"models: every family needs the same number of levels, got {levels}")
    for key, entry in suite.models.items():
        problems += _family_problems(key, entry)
    problems += _battery_problems(suite.battery)
    problems += _alignment_problems(suite.alignment)
    s = suite.stitching
    if not 0.0 <= s.depth <= 1.0:
        problems.append(f"stitching.depth: {s.depth} is outside [0, 1]")
    if s.recipe.epochs < 1:
        problems.append(f"stitching.recipe.epochs: {s.recipe.epochs}; give at least 1")
    return problems


def _family_problems(key: str, entry: FamilyEntry) -> list[str]:
    from stitching.models import list_models

    where, problems = f"models.{key}", []
    known = list_models()
    if entry.name not in known:
        hint = did_you_mean(entry.name, [n for n in known if n.startswith("mini_")] + known)
        problems.append(f"{where}.name: unknown model {entry.name!r}; {hint}".rstrip("; "))
    if not entry.seeds or len(set(entry.seeds)) != len(entry.seeds):
        problems.append(f"{where}.seeds: {entry.seeds}; give distinct seeds")
    max_epochs = _max_epochs(entry.train, where, problems)
    if not entry.epochs:
        problems.append(f"{where}.epochs: give the training budget (epochs) of each level")
    for epochs in entry.epochs:
        if epochs < 1 or (max_epochs is not None and epochs > max_epochs):
            problems.append(
                f"{where}.epochs: level {epochs} is out of range; give 1 to {max_epochs} (the config's "
                "trainer.max_epochs, the fully trained model)"
            )
    if any(b <= a for a, b in zip(entry.epochs, entry.epochs[1:], strict=False)):
        problems.append(f"{where}.epochs: {entry.epochs} must increase from level to level")
    return problems


def _max_epochs(train: str, where: str, problems: list[str]) -> int | None:
    from stitching.zoo import _resolve_path

    path = _resolve_path(train)
    if not path.is_file():
        problems.append(f"{where}.train: no file {train!r} (configs/train/ holds the shipped ones)")
        return None
    config = yaml.safe_load(path.read_text()) or {}
    value = (config.get("trainer") or {}).get("max_epochs")
    if not isinstance(value, int):
        problems.append(f"{where}.train: {train} sets no integer trainer.max_epochs")
        return None
    return value


def _battery_problems(battery: Battery) -> list[str]:
    problems = []
    for task in battery.tasks:
        if task not in TASKS:
            problems.append(f"battery.tasks: unknown task {task!r}; {did_you_mean(task, TASKS)}valid: "
                            f"{', '.join(TASKS)}")  # fmt: skip
    if not battery.tasks:
        problems.append("battery.tasks: give at least one task")
    if not 0.5 < battery.threshold <= 1.0:
        problems.append(f"battery.threshold: {battery.threshold}; give a balanced accuracy in (0.5, 1]")
    if not (battery.ridge > 0 and math.isfinite(battery.ridge)):
        problems.append(f"battery.ridge: {battery.ridge}; give a positive number")
    return problems


def _alignment_problems(spec: AlignmentSpec) -> list[str]:
    from stitching.metrics import list_metrics

    problems = []
    for metric in spec.metrics:
        if metric not in list_metrics():
            hint = did_you_mean(metric, list_metrics())
            problems.append(
                f"alignment.metrics: unknown metric {metric!r}; {hint}valid: {', '.join(list_metrics())}"
            )
    if spec.topk < 1 or spec.permutations < 1:
        problems.append(f"alignment: topk ({spec.topk}) and permutations ({spec.permutations}) must be >= 1")
    if spec.samples is not None and spec.samples <= spec.topk:
        problems.append(f"alignment.samples: {spec.samples}; k-NN metrics need more samples than topk")
    for depth in spec.depths or []:
        if not 0.0 <= depth <= 1.0:
            problems.append(f"alignment.depths: {depth} is outside [0, 1]")
    return problems


def model_specs(suite: CompetenceSuite, config_dir: str | Path) -> list[ModelSpec]:
    """Every (family, level, seed) of the suite, with its level's training config written to
    ``config_dir`` (the family's config with ``trainer.max_epochs`` set; the store keys it by content)."""
    config_dir = Path(config_dir)
    specs = []
    for key, entry in suite.models.items():
        for level, epochs in enumerate(entry.epochs):
            path = level_config(entry.train, epochs, config_dir / f"{key}_e{epochs}.yaml")
            for seed in entry.seeds:
                specs.append(
                    ModelSpec(f"{key}_e{epochs}_s{seed}", key, entry.name, level, epochs, seed, str(path))
                )
    return specs


def level_config(train: str, epochs: int, path: Path) -> Path:
    """Write ``train`` with ``trainer.max_epochs = epochs`` to ``path`` (an unchanged file is left alone)."""
    from stitching.zoo import _resolve_path

    config = yaml.safe_load(_resolve_path(train).read_text())
    config.setdefault("trainer", {})["max_epochs"] = epochs
    text = f"# {train} with trainer.max_epochs = {epochs} (a competence level; generated)\n"
    text += yaml.safe_dump(config, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    return path
