"""A benchmark cell, fully resolved: which models, which cuts, which adapter, how it is trained and scored.

``Cell`` is what the grid produces, executors carry and ``run_cell`` consumes; its ``config`` is what a record
stores (``CellConfig.to_dict()``; the JSON layout is ``stitching.cell/1``'s) and, with training configs by
content rather than path (``CellConfig.identity()``), what a cell id hashes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stitching._utils import stable_hash
from stitching.adapters import AdapterConfig
from stitching.core.optim import Recipe
from stitching.zoo import ModelSource


@dataclass(frozen=True)
class BaseModel:
    """One base model of a cell: a suite's model entry at one seed."""

    key: str
    """The suite's key for the model (``resnet``)."""
    name: str
    """timm or ``mini_`` model name."""
    seed: int
    """Training seed (or initialisation seed of an untrained model)."""
    train: str | None = None
    """Base-training config: trained on first use and kept in the model store."""
    pretrained: bool = False
    """timm's pretrained weights."""
    checkpoint: str | None = None
    """Local weights file."""
    train_digest: str | None = None
    """Hash of the base-training config's content (see :func:`stitching.bench.grid.train_digest`): a cell id
    hashes it in place of the ``train`` path, so editing the config changes the id and moving it does not."""

    def source(self) -> ModelSource:
        """Where the model store finds or builds this model."""
        return ModelSource(self.name, self.pretrained, self.checkpoint, self.train, self.seed)

    def label(self, cut: str) -> str:
        """``key/seed:cut``, as listings print it."""
        return f"{self.key}/{self.seed}:{cut}"


@dataclass(frozen=True)
class CellConfig:
    """Everything that determines a cell's result."""

    dataset: dict[str, Any]
    """``{class_path, init_args}`` of the LightningDataModule."""
    source: BaseModel
    """The model whose front is stitched in."""
    target: BaseModel
    """The model whose back consumes the adapted activation."""
    pair_kind: str
    """``self``, ``same_arch`` or ``cross_arch``."""
    source_cut: str
    """Cut name in the source."""
    target_cut: str
    """Cut name in the target."""
    source_depth: float
    """Relative depth of the source cut (rounded to 4 digits)."""
    target_depth: float
    """Relative depth of the target cut."""
    adapter: dict[str, Any]
    """``AdapterConfig`` options (without ``init``)."""
    init: str
    """Adapter initialisation: ``random``, ``identity`` or ``lstsq``."""
    stitch_seed: int
    """Seed of the adapter's initialisation and of the order of training samples."""
    recipe: Recipe
    """How the adapter is trained."""
    objective: str = "task"
    """What the adapter is trained for: ``task``, ``match`` or ``task+match``."""
    controls: tuple[str, ...] = ()
    """Controls trained beside the stitched adapter (``random_source``)."""
    metrics: tuple[str, ...] = ()
    """Alignment metrics between the two activations."""
    metric_reduction: str = "mean"
    """How activations become (N, D) rows for the metrics."""
    metric_samples: int = 1000
    """At most this many test samples enter the metrics."""
    permutations: int = 1000
    """Permutations in each alignment metric's permutation test."""
    cache_dtype: str = "float32"
    """Dtype of the cached front activations (``float32``, ``bfloat16``, ``float16``)."""
    train_per_class: int | None = None
    """Training images per class (a seeded subset of the training split); None: the whole split."""
    subset_seed: int = 0
    """Seed of the training subset's draw."""

    @property
    def adapter_config(self) -> AdapterConfig:
        """The adapter's options (``init`` is the cell's)."""
        return AdapterConfig(**self.adapter, init=self.init)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that cell ids hash and records store."""
        out = asdict(self)
        out["controls"], out["metrics"] = list(self.controls), list(self.metrics)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellConfig:
        """The inverse of :meth:`to_dict` (a record's ``config``)."""
        return cls(
            **{
                **data,
                "source": BaseModel(**data["source"]),
                "target": BaseModel(**data["target"]),
                "recipe": Recipe(**data["recipe"]),
                "controls": tuple(data.get("controls", ())),
                "metrics": tuple(data.get("metrics", ())),
            }
        )

    def identity(self) -> dict[str, Any]:
        """What a cell id hashes: :meth:`to_dict`, with a base model's training-config path replaced by the
        hash of its content where known (so the ids of cells without a training config are unchanged)."""
        out = self.to_dict()
        for side in ("source", "target"):
            digest = out[side].pop("train_digest", None)
            if digest:
                out[side]["train"] = f"sha256:{digest}"
        return out

    def cell_id(self) -> str:
        """Stable 12-hex-digit id: sha256 of the canonical JSON of :meth:`identity`."""
        return stable_hash(self.identity(), 12)


@dataclass(frozen=True)
class SuiteRef:
    """The suite a cell belongs to."""

    name: str
    """Suite name (the results directory)."""
    version: str
    """Suite version."""


@dataclass(frozen=True)
class Cell:
    """One unit of benchmark work: a resolved config, its id and its suite."""

    config: CellConfig
    """What the cell computes."""
    suite: SuiteRef
    """Where its record belongs."""
    cell_id: str = field(default="")
    """Hash of ``config``; filled in when empty."""

    def __post_init__(self) -> None:
        if not self.cell_id:
            object.__setattr__(self, "cell_id", self.config.cell_id())

    def describe(self) -> str:
        """One line: ``id  source -> target  init``."""
        c = self.config
        return f"{self.cell_id}  {c.source.label(c.source_cut)} -> {c.target.label(c.target_cut)}  {c.init}"
