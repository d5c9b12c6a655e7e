"""Re-run a benchmark cell from the Lightning CLI: the ``stitching fit`` config that reproduces it.

The config names the same models, cuts, adapter, initialisation, optimiser and schedule, seeds and data
split; its data module (:class:`stitching.data.CellDataModule`) feeds the clean training split in the order
the cached loop uses, so ``stitching fit`` + ``stitching test`` give the cell's ``lstsq_acc`` exactly and its
``stitched_acc`` within floating-point noise.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from stitching._utils import atomic_write
from stitching.bench.cell_config import BaseModel, Cell
from stitching.core.training import MIN_DELTA


def fit_config(cell: Cell, accelerator: str = "auto") -> dict[str, Any]:
    """The LightningCLI config (``stitching fit --config``) of ``cell``."""
    c = cell.config
    return {
        "seed_everything": c.stitch_seed,
        "model": {
            "class_path": "stitching.modules.StitchModule",
            "init_args": {
                "source": _model_source(c.source),
                "target": _model_source(c.target),
                "source_cut": c.source_cut,
                "target_cut": c.target_cut,
                "adapter": asdict(c.adapter_config),
                "optimizer": asdict(c.recipe.optimization),
                "seed": c.stitch_seed,
                "objective": c.objective,
            },
        },
        "data": {
            "class_path": "stitching.data.CellDataModule",
            "init_args": {
                "dataset": c.dataset,
                "order_seed": c.stitch_seed,
                "batch_size": c.recipe.batch_size,
                **_subset(c),
            },
        },
        "trainer": {
            "max_epochs": c.recipe.epochs,
            "accelerator": accelerator,
            "devices": 1,
            "callbacks": _early_stopping(c.recipe.patience),
        },
    }


def _subset(config) -> dict[str, Any]:
    """The cell's training subset as ``CellDataModule`` arguments (none for the whole split)."""
    if config.train_per_class is None:
        return {}
    return {"train_per_class": config.train_per_class, "subset_seed": config.subset_seed}


def _early_stopping(patience: int | None) -> list[dict[str, Any]]:
    """With patience: stop on the validation loss and test the best epoch's adapter, as the cached loop."""
    if patience is None:
        return []
    monitor = {"monitor": "val/loss", "mode": "min"}
    return [
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
         "init_args": {**monitor, "patience": patience, "min_delta": MIN_DELTA}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": monitor},
    ]  # fmt: skip


def export_fit(cell: Cell, path: str | Path, accelerator: str = "auto") -> Path:
    """Write ``cell``'s ``stitching fit`` config to ``path`` (YAML, with the commands to run in a header)."""
    header = (
        f"# Cell {cell.cell_id} of suite {cell.suite.name} v{cell.suite.version}: {cell.config.pair_kind}\n"
        f"#   {cell.describe()}\n"
        "# Re-run it with the Lightning CLI (same models, cuts, adapter, init, recipe, seeds, data split):\n"
        f"#   stitching fit --config {path}\n"
        f"#   stitching test --config {path} --ckpt_path <the checkpoint fit printed>\n"
    )
    text = header + yaml.safe_dump(fit_config(cell, accelerator), sort_keys=False)
    return atomic_write(path, text)


def _model_source(model: BaseModel) -> dict[str, Any]:
    source = asdict(model.source())
    del source["model_kwargs"]
    return source
