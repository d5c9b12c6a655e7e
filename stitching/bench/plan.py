"""The plan of a suite before anything runs: what each (model, cut, split) activation costs, where it goes
(memory, disk or streamed) under the cache budgets, the front and back passes, and a time estimate.

:func:`make_plan` is pure (cells, activation shapes, dataset facts, settings -> :class:`Plan`) and places
activations with the same :class:`~stitching.bench.cache.CachePolicy` the cache uses at run time, in the
order the runner runs cells. :func:`gather` finds its inputs (shapes from untrained models, no weights
downloaded; sizes from the data when it is here; timings of finished cells). ``stitching bench SUITE
--dry-run`` prints :func:`format_plan`; a plan with problems stops the run before any training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from stitching.bench.cache import CachePolicy, CacheSettings
from stitching.bench.cell_config import BaseModel, Cell, CellConfig
from stitching.bench.data import DatasetFacts
from stitching.data.subset import subset_problem

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2**30


@dataclass
class ActivationCost:
    """One (model, cut, split) activation of the suite."""

    model: str
    """``key/seed:cut`` (``random:key/seed:cut`` for a random-source control)."""
    split: str
    samples: int | None
    """Images in the split (the training subset's for ``train``); None: unknown."""
    shape: tuple[int, ...]
    """One sample's activation shape."""
    dtype: str
    place: str = "unknown"
    """``memory``, ``disk``, ``streamed`` or ``unknown`` (sizes unknown)."""
    front_passes: int = 0
    """Passes of the frozen front over the split (1 when cached; more if evicted, or per epoch streamed)."""
    cells: int = 0
    """Cells that read it."""

    @property
    def nbytes(self) -> int | None:
        if self.samples is None:
            return None
        return self.samples * math.prod(self.shape) * _BYTES[self.dtype]


@dataclass
class CellCost:
    """One cell's work."""

    cell_id: str
    describe: str
    path: str
    """``cached`` or ``streamed`` (its training split)."""
    front_images: int
    """Images through a frozen front for this cell (first computations and streamed passes)."""
    back_images: int
    """Images through the target back (training steps, validation and test scoring, every adapter)."""
    memory_bytes: int = 0
    """Bytes of the cached activations this cell holds in memory at once (the cache's budget bounds what
    it keeps between cells; a running cell keeps what it reads)."""
    done: bool = False
    estimate_s: float | None = None


@dataclass
class Plan:
    """What a suite will cost, and whether it fits the budgets."""

    settings: CacheSettings
    activations: list[ActivationCost]
    cells: list[CellCost]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Why the suite cannot run as configured (each with the fix); empty: it fits."""
    estimate_from: str = ""
    """Which records the time estimate comes from (empty: no estimate)."""

    def bytes_in(self, place: str) -> int:
        return sum(a.nbytes or 0 for a in self.activations if a.place == place)

    @property
    def estimate_s(self) -> float | None:
        pending = [c for c in self.cells if not c.done]
        if not pending or any(c.estimate_s is None for c in pending):
            return None
        return sum(c.estimate_s for c in pending)


def run_order(cells: Sequence[Cell]) -> list[Cell]:
    """Cells in the order the runner runs them (grouped by source model and cut)."""
    return sorted(cells, key=lambda c: f"{c.config.source.key}:{c.config.source.seed}:{c.config.source_cut}")


@dataclass(frozen=True)
class _Need:
    key: tuple
    model: str
    split: str
    shape: tuple[int, ...]
    role: str


def _needs(config: CellConfig, shapes: dict[tuple[str, str], tuple[int, ...]]) -> list[_Need]:
    """The activations a cell reads, as ``stitching.bench.cell`` asks for them."""
    subset = (config.train_per_class, config.subset_seed) if config.train_per_class else None
    out = []

    def add(identity, label, name, cut, splits, role):
        for split in splits:
            key = (identity, cut, split, config.cache_dtype, subset if split == "train" else None)
            out.append(_Need(key, label, split, shapes[(name, cut)], role))

    src, tgt = config.source, config.target
    add(
        _model_id(src),
        src.label(config.source_cut),
        src.name,
        config.source_cut,
        ("train", "val", "test"),
        "source",
    )
    add(
        _model_id(tgt), tgt.label(config.target_cut), tgt.name, config.target_cut, ("train", "test"), "target"
    )
    if "random_source" in config.controls:
        label = f"random:{src.key}/{config.stitch_seed}:{config.source_cut}"
        identity = ("random", src.name, config.stitch_seed)
        add(identity, label, src.name, config.source_cut, ("train", "val", "test"), "random")
    return out


def _model_id(base: BaseModel) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in asdict(base).items() if k != "key"))


def _streamed_passes(config: CellConfig, need: _Need) -> int:
    """Passes of a streamed front over its split in one cell (training: the lstsq fit, then every epoch)."""
    epochs, lstsq = config.recipe.epochs, int(config.init == "lstsq")
    if need.split == "val":
        return epochs + 1  # validation before training and after every epoch
    if need.split == "test":
        return 4 if need.role != "target" else 1
    if need.role == "target":
        fits = lstsq * (1 + ("random_source" in config.controls))
        return fits + (epochs if config.objective != "task" else 0)
    return lstsq + epochs


def _back_images(config: CellConfig, sizes: dict[str, int]) -> int:
    adapters = 1 + len(config.controls)
    epochs = config.recipe.epochs
    train, val, test = (sizes.get(s, 0) for s in ("train", "val", "test"))
    return adapters * (epochs * train + (epochs + 1) * val + 2 * test) + 3 * test


def make_plan(
    cells: Sequence[Cell],
    shapes: dict[tuple[str, str], tuple[int, ...]],
    facts: DatasetFacts,
    settings: CacheSettings,
    records: Iterable[dict] = (),
    done: Iterable[str] = (),
) -> Plan:
    """The plan of ``cells``: ``shapes`` maps (model name, cut) to one sample's activation shape at the
    dataset's input size; ``records`` are finished cells' records (their timings give the estimate)."""
    done = set(done)
    policy = CachePolicy(
        int(settings.memory_gb * GIB),
        None if settings.disk_gb is None else int(settings.disk_gb * GIB),
        True,
        settings.persist,
    )
    plan = Plan(settings, [], [])
    costs: dict[tuple, ActivationCost] = {}
    for cell in run_order(cells):
        sizes = _cell_sizes(cell.config, facts)
        stream_train = settings.path == "streamed"
        plan.cells.append(_place_cell(cell, shapes, sizes, policy, costs, cell.cell_id in done, stream_train))
    plan.activations = list(costs.values())
    plan.problems = _problems(plan, cells, shapes, facts)
    plan.estimate_from = _estimate(plan, cells, list(records))
    if any(c.config.train_per_class for c in cells) and not (facts.class_counts or facts.num_classes):
        plan.notes.append("training subsets counted as whole splits: set activations.num_classes")
    largest = max((c.memory_bytes for c in plan.cells if not c.done), default=0)
    if largest > settings.memory_gb * GIB:
        plan.notes.append(
            f"a cell holds up to {_size(largest)} of cached activations in memory while it runs, more than "
            "--cache.memory_gb (which bounds what is kept between cells): the machine needs that much per "
            "process, or lower --cache.memory_gb so that more goes to disk"
        )
    if not facts.sizes:
        plan.notes.append(f"split sizes unknown: bytes and places not computed ({facts.note})")
    elif facts.note:
        plan.notes.append(facts.note)
    return plan


def _cell_sizes(config: CellConfig, facts: DatasetFacts) -> dict[str, int]:
    sizes = dict(facts.sizes)
    classes = len(facts.class_counts.get("train", [])) or facts.num_classes
    if config.train_per_class and sizes.get("train") is not None and classes:
        sizes["train"] = config.train_per_class * classes
    return sizes


def _place_cell(cell, shapes, sizes, policy: CachePolicy, costs, done: bool, stream_train: bool) -> CellCost:
    config = cell.config
    front, held, streamed_train = 0, 0, False
    for need in _needs(config, shapes):
        samples = sizes.get(need.split)
        cost = costs.setdefault(
            need.key, ActivationCost(need.model, need.split, samples, need.shape, config.cache_dtype)
        )
        cost.cells += 1
        if done and cost.place == "unknown":
            cost.place = "done"  # a finished cell needs nothing; a pending one sharing it places it below
        if done or samples is None:
            continue
        place = policy.lookup(str(need.key))
        if place is None:
            forced = stream_train and need.split == "train"
            place = "streamed" if forced else policy.add(str(need.key), cost.nbytes)[0]
            if place != "streamed":
                cost.front_passes += 1
                front += samples
        cost.place = place if cost.place in ("unknown", "done", place) else f"{cost.place}+{place}"
        held += cost.nbytes if place == "memory" else 0
        if place == "streamed":
            passes = _streamed_passes(config, need)
            cost.front_passes += passes
            front += passes * samples
            streamed_train |= need.split == "train"
    if "clustered_noise" in config.controls and not done:  # its activations are drawn in memory, per split
        per_sample = 4 * math.prod(shapes[(config.source.name, config.source_cut)])
        held += per_sample * sum(sizes.get(split) or 0 for split in ("train", "val", "test"))
    path = "streamed" if streamed_train else "cached"
    return CellCost(cell.cell_id, cell.describe(), path, front, _back_images(config, sizes), held, done)


def _problems(plan: Plan, cells: Sequence[Cell], shapes, facts: DatasetFacts) -> list[str]:
    problems = []
    settings = plan.settings
    streamed = [a for a in plan.activations if a.place.endswith("streamed")]
    if settings.path == "cached" and streamed:
        problems.append(
            f"{len(streamed)} activation(s) fit neither budget (memory {settings.memory_gb:g} GiB, disk "
            f"{_disk(settings)}) and the path is 'cached'; {_options(plan)}"
        )
    wants_stream = settings.path == "streamed" or streamed
    for split, n in sorted(facts.sizes.items()):
        if n == 0:
            why = "streaming was asked for, but " if wants_stream else ""
            problems.append(
                f"{why}the {split} split has no images; check the dataset's folders and split sizes"
            )
    if wants_stream and not facts.sizes:
        problems.append(f"streaming needs the split sizes, which are unknown ({facts.note})")
    problems += _subset_problems(cells, facts)
    problems += _batch_problems(cells, shapes, settings)
    return problems


def _subset_problems(cells: Sequence[Cell], facts: DatasetFacts) -> list[str]:
    out = set()
    for cell in cells:
        k = cell.config.train_per_class
        if k is None:
            continue
        counts = facts.class_counts.get("train")
        if counts:
            problem = subset_problem(counts, k)
        elif k < 1:
            problem = subset_problem([], k)
        else:
            problem = None
        if problem:
            out.add(problem)
    return sorted(out)


def _batch_problems(cells: Sequence[Cell], shapes, settings: CacheSettings) -> list[str]:
    """A training batch (float32, every adapter's input and the target's) must fit the memory budget."""
    worst = None
    for cell in cells:
        c = cell.config
        per_sample = math.prod(shapes[(c.source.name, c.source_cut)]) * (1 + ("random_source" in c.controls))
        per_sample += math.prod(shapes[(c.target.name, c.target_cut)])
        nbytes = 4 * c.recipe.batch_size * per_sample
        if worst is None or nbytes > worst[0]:
            worst = (nbytes, cell)
    if worst is None or worst[0] <= settings.memory_gb * GIB:
        return []
    nbytes, cell = worst
    return [
        f"the memory budget ({settings.memory_gb:g} GiB) cannot hold one training batch of "
        f"{cell.config.recipe.batch_size} ({nbytes / GIB:.2f} GiB in float32) of cell {cell.describe()}; "
        "raise --cache.memory_gb or lower recipe.batch_size"
    ]


def _disk(settings: CacheSettings) -> str:
    return "unlimited" if settings.disk_gb is None else f"{settings.disk_gb:g} GiB"


def _options(plan: Plan) -> str:
    total = sum(a.nbytes or 0 for a in plan.activations)
    float32 = sum((a.nbytes or 0) * 4 // _BYTES[a.dtype] for a in plan.activations)
    train = sum(a.nbytes or 0 for a in plan.activations if a.split == "train")
    return (
        f"all activations take {_size(total)}. Options: stream what does not fit (activations.path: auto, "
        f"or --cache.path auto); cache in bfloat16 (activations.dtype: bfloat16: {_size(float32 // 2)}); "
        f"train on a subset (activations.train_per_class: the training splits take {_size(train)} now); or "
        "raise --cache.memory_gb / --cache.disk_gb"
    )


def _estimate(plan: Plan, cells: Sequence[Cell], records: list[dict]) -> str:
    """Each pending cell's time: the mean total of finished cells with the same models and cuts (else of
    all finished cells of the results directory), scaled by its back images."""
    if not records:
        return ""
    by_id = {c.cell_id: c.config for c in cells}

    def what(config: dict) -> tuple:
        return (
            config["source"]["name"],
            config["source_cut"],
            config["target"]["name"],
            config["target_cut"],
        )

    rates: dict[tuple, list[float]] = {}
    for record in records:
        seconds = record.get("timings", {}).get("total")
        if seconds:
            rates.setdefault(what(record["config"]), []).append(seconds)
    everything = [s for v in rates.values() for s in v]
    if not everything:
        return ""
    for cost in plan.cells:
        if cost.done:
            continue
        config = by_id[cost.cell_id]
        same = rates.get(what(_config_dict(config)), everything)
        cost.estimate_s = sum(same) / len(same)
    return f"mean time of {len(everything)} finished cell(s) with the same models and cuts (else of all)"


def _config_dict(config: CellConfig) -> dict:
    return {
        "source": {"name": config.source.name},
        "source_cut": config.source_cut,
        "target": {"name": config.target.name},
        "target_cut": config.target_cut,
    }


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "?"
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_plan(plan: Plan) -> str:
    """The plan as ``--dry-run`` prints it: one line per cell, per activation, then totals and verdict."""
    s = plan.settings
    lines = ["cells (in run order):"]
    for c in plan.cells:
        when = "done" if c.done else (_duration(c.estimate_s) if c.estimate_s is not None else "no estimate")
        lines.append(
            f"  {c.describe}  {c.path}  front {c.front_images:,} img  back {c.back_images:,} img  {when}"
        )
    lines.append(
        f"activations (model:cut, split): memory budget {s.memory_gb:g} GiB, disk {_disk(s)}, path {s.path}"
    )
    header = f"{'model:cut':<32} {'split':<5} {'images':>10} {'shape':<14} {'dtype':<8} {'bytes':>10}"
    lines.append(f"  {header}  place  (front passes, cells)")
    for a in plan.activations:
        shape = "x".join(map(str, a.shape))
        samples = "?" if a.samples is None else f"{a.samples:,}"
        lines.append(
            f"  {a.model:<32} {a.split:<5} {samples:>10} {shape:<14} {a.dtype:<8} {_size(a.nbytes):>10}  "
            f"{a.place}  ({a.front_passes}, {a.cells})"
        )
    pending = [c for c in plan.cells if not c.done]
    again = sum(max(0, a.front_passes - 1) for a in plan.activations if a.place == "memory")
    lines.append(
        f"total: {len(plan.cells)} cells ({len(pending)} to run); activations cached in memory "
        f"{_size(plan.bytes_in('memory'))} in all (at most {s.memory_gb:g} GiB kept between cells; {again} "
        f"recomputed after eviction), on disk {_size(plan.bytes_in('disk'))}, streamed "
        f"{_size(plan.bytes_in('streamed'))} (never stored); front {sum(c.front_images for c in pending):,} "
        f"images, back {sum(c.back_images for c in pending):,} images; the largest cell holds "
        f"{_size(max((c.memory_bytes for c in pending), default=0))} in memory while it runs"
    )
    estimate = plan.estimate_s
    if not pending:
        lines.append("estimate: nothing to run (every cell has a record)")
    elif estimate is not None:
        lines.append(f"estimate: {_duration(estimate)} ({plan.estimate_from})")
    else:
        lines.append("estimate: no estimate (no finished cells in the results directory to time from)")
    lines += [f"note: {n}" for n in plan.notes]
    if plan.problems:
        lines.append(f"does not fit: {len(plan.problems)} problem(s) found before any training:")
        lines += [f"  - {p}" for p in plan.problems]
    else:
        lines.append("fits the budgets")
    return "\n".join(lines)


def gather(suite: Any, cells: Sequence[Cell], settings: CacheSettings, results_dir: str | Path) -> Plan:
    """The plan of ``cells`` of ``suite``: activation shapes from untrained models at the dataset's input
    size (no weights downloaded), split sizes from the data when it is here (else the suite's
    ``activations.split_sizes``), the timings of the results directory's finished cells."""
    from stitching.bench.data import describe_dataset
    from stitching.bench.store import ResultStore

    settings = replace(settings, path=settings.path or suite.activations.path)
    facts = describe_dataset(suite.dataset, suite.activations.split_sizes, suite.activations.num_classes)
    shapes = {}
    for cell in cells:
        c = cell.config
        for name, cut in ((c.source.name, c.source_cut), (c.target.name, c.target_cut)):
            shapes[(name, cut)] = activation_shape(name, cut, facts.input_size)
    records = list(ResultStore(results_dir).records())
    done = {r["cell_id"] for r in records} & {c.cell_id for c in cells}
    return make_plan(cells, shapes, facts, settings, records, done)


@cache
def activation_shape(name: str, cut: str, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    """One sample's activation shape at ``cut`` of an untrained ``name`` for inputs of ``input_size``."""
    import timm

    from stitching.bench.grid import model_cuts
    from stitching.cuts import get_cut
    from stitching.models import create_model

    default = getattr(timm.models.get_pretrained_cfg(name), "input_size", None)
    if input_size is None or tuple(input_size) == default:  # the suite's validation built it already
        return tuple(next(c for c in model_cuts(name) if c.name == cut).spec.shape)
    return tuple(get_cut(create_model(name, pretrained=False), cut, input_size).spec.shape)
