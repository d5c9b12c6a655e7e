"""Run the competence suite: train every (family, level, seed) through the model store, measure its
competence (test accuracy and the task battery), extract features at the chosen cuts, align every model pair
with the many-model engine (``stitching.prh.align``), stitch at one matched depth with the bench, and write
tables, figures and a README to the output directory.

Everything computed is kept: base models in the store, stitching records in ``<out>/stitching/``; a re-run
trains and stitches only what is missing (features, probes and alignment are recomputed: about a few
minutes).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stitching._utils import atomic_write
from stitching.prh.competence import CompetenceSuite, ModelSpec, model_specs
from stitching.prh.competence_tasks import battery_summary, probe_scores, probe_table


@dataclass
class CompetenceResult:
    """What a run produced (also written to the output directory)."""

    models: pd.DataFrame
    """One row per model: family, level, epochs, seed, test/val accuracy, tasks solved, mean alignment."""
    probes: pd.DataFrame
    """Models x tasks balanced probe accuracies."""
    alignment: Any
    """The engine's ``AlignmentResult``."""
    stitching: pd.DataFrame
    """One row per stitched pair with both models' competence (empty when stitching is off)."""
    timings: dict[str, float] = field(default_factory=dict)


def _log(message: str) -> None:
    print(f"competence: {message}", file=sys.stderr, flush=True)


def train_models(specs: list[ModelSpec]) -> dict[str, dict[str, Any]]:
    """Every model from the store (trained on first use): ``{key: store metrics}``."""
    from stitching.zoo import ModelSource, get_trained, is_stored

    metrics = {}
    for i, spec in enumerate(specs, 1):
        source = ModelSource(spec.name, train=spec.train, seed=spec.seed)
        stored = is_stored(source)
        metrics[spec.key] = get_trained(source).metrics
        m = metrics[spec.key]
        what = "in the store" if stored else f"trained in {m['train_seconds']:.0f} s"
        _log(f"[{i}/{len(specs)}] {spec.key}: test acc {m['test_acc']:.3f} ({what})")
    return metrics


@torch.no_grad()
def final_features(model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """The frozen final features (timm's ``forward_head(..., pre_logits=True)``) and labels of a split."""
    feats, labels = [], []
    for x, y in loader:
        feats.append(model.forward_head(model.forward_features(x), pre_logits=True).double())
        labels.append(y)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def chosen_cuts(model: nn.Module, depths: list[float] | None) -> list[str]:
    """The cut names at ``depths`` (nearest cut each, in order, without repeats); every cut for None."""
    from stitching.cuts import get_cut, list_cuts

    if depths is None:
        return [c.name for c in list_cuts(model)]
    return list(dict.fromkeys(get_cut(model, d).name for d in depths))


def measure_models(suite: CompetenceSuite, specs: list[ModelSpec], metrics: dict[str, dict]):
    """Per model: probes on the final features, and its ``FeatureSet`` at the chosen cuts of the alignment
    split. Returns ``(models table, probe table, feature sets)``."""
    from stitching.bench.data import build_datamodule, split_loader
    from stitching.prh.features import vision_feature_set
    from stitching.zoo import ModelSource, load_model

    datamodule = build_datamodule(suite.dataset)
    loaders = {
        split: split_loader(datamodule, split, 256) for split in ("train", "test", suite.alignment.split)
    }
    b, a = suite.battery, suite.alignment
    rows, probes, sets = [], {}, []
    for spec in specs:
        model = load_model(ModelSource(spec.name, train=spec.train, seed=spec.seed))
        scores = probe_scores(
            final_features(model, loaders["train"]), final_features(model, loaders["test"]), b.tasks, b.ridge
        )
        probes[spec.key] = scores
        m = metrics[spec.key]
        row = {"model": spec.key, "family": spec.family, "name": spec.name, "level": spec.level,
               "epochs": spec.epochs, "seed": spec.seed, "test_acc": m["test_acc"], "val_acc": m["val_acc"],
               "train_seconds": m["train_seconds"], **battery_summary(scores, b.threshold)}  # fmt: skip
        rows.append(row)
        fs = vision_feature_set(spec.key, model, loaders[a.split], chosen_cuts(model, a.depths))
        if a.samples is not None:
            fs = fs.rows(slice(0, a.samples))
        fs.info.update(row)
        sets.append(fs)
    return pd.DataFrame(rows), probe_table(probes), sets


def align_models(suite: CompetenceSuite, sets: list) -> Any:
    """Every model pair at every pair of chosen cuts, calibrated (the engine's ``alignment_matrices``)."""
    from stitching.prh.align import AlignSettings, alignment_matrices

    a = suite.alignment
    settings = AlignSettings(
        metrics=tuple(a.metrics), topk=a.topk, prh_protocol=a.prh_protocol, n_permutations=a.permutations
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small operations: one thread was 25x faster on a busy 2-core machine
    try:
        return alignment_matrices(sets, settings)
    finally:
        torch.set_num_threads(threads)


def _keep_alignment(out: Path, models: pd.DataFrame, alignment: Any) -> None:
    """Write the alignment tables at once: the stitching part that follows may be interrupted."""
    from stitching.prh.align import write_alignment

    order = list(models.sort_values(["level", "family", "seed"]).model)
    write_alignment(out / "alignment", alignment, order, layer_plots=False)
    atomic_write(out / "models.csv", models.to_csv(index=False, float_format="%.4g"))


def run_competence(suite: CompetenceSuite, out: str | Path) -> CompetenceResult:
    """The whole experiment, written to ``out`` (see the module docstring)."""
    from stitching.prh.competence_report import write_outputs

    out = Path(out)
    timings, started = {}, time.perf_counter()
    specs = model_specs(suite, out / "train_configs")
    _log(f"{len(specs)} models ({len(suite.models)} families x {suite.n_levels} levels x seeds) -> {out}")
    metrics = train_models(specs)
    timings["train_s"] = time.perf_counter() - started
    models, probes, sets = measure_models(suite, specs, metrics)
    timings["probes_features_s"] = time.perf_counter() - started - sum(timings.values())
    _log(f"aligning {len(sets)} models pairwise ({', '.join(suite.alignment.metrics)})")
    alignment = align_models(suite, sets)
    timings["alignment_s"] = time.perf_counter() - started - sum(timings.values())
    _keep_alignment(out, models, alignment)
    stitched = pd.DataFrame()
    if suite.stitching.enabled:
        from stitching.prh.competence_stitch import join_competence, run_stitching

        stitched = join_competence(run_stitching(suite, specs, out), models)
    timings["stitching_s"] = time.perf_counter() - started - sum(timings.values())
    timings["total_s"] = time.perf_counter() - started  # the figures and README take seconds more
    result = CompetenceResult(models, probes, alignment, stitched, timings)
    write_outputs(out, suite, result)
    return result
