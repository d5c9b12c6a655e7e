"""StitchModule: a frozen source front, a trainable adapter, a frozen target back.

    x -> source front (frozen, eval) -> adapter (trained) -> target back (frozen, eval) -> logits

Next to the stitched accuracy every evaluation logs, on the same batches, the target alone, the source alone
(when both classify the same labels) and the stitched network with the adapter as it was initialised (for
``lstsq``: the training-free stitch), so a run's numbers can be read without a second run.

The adapter, its least-squares fit (on the clean, evaluation-preprocessed training split), the optimiser and
schedule and the training loss come from :mod:`stitching.core`, the code the benchmark's cached loop runs;
``stitching bench SUITE --export-fit CELL_ID`` writes the config that re-runs a benchmark cell here.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from stitching.adapters import AdapterConfig
from stitching.core.activations import eval_loader, front_batches
from stitching.core.adapters import build_adapter
from stitching.core.optim import OptimizerSpec
from stitching.core.training import MATCH_SCALE_ROWS, MatchTargets, Objective, stitch_losses
from stitching.cuts import get_cut, split_model
from stitching.nn import freeze, num_trainable_parameters
from stitching.zoo import ModelSource, load_model

EVALUATED = ("stitched", "target", "source", "init_stitched")


class StitchModule(L.LightningModule):
    """Train only an adapter between ``source``'s front (up to ``source_cut``) and ``target``'s back.

    Args:
        source: The model whose representation is tested (timm name, checkpoint, or trained-on-first-use).
        target: The model whose back half consumes the adapted representation.
        source_cut: A cut name of the source (``stitching.list_cuts``) or a relative depth in [0, 1].
        target_cut: Likewise for the target; ``None`` takes the target cut nearest the source cut's depth.
        adapter: Adapter options; ``init: lstsq`` solves a ridge regression at the start of fit over the
            whole training split with evaluation preprocessing (``datamodule.eval_dataset("train")``), as the
            benchmark does, whatever augmentation the training batches get.
        num_classes: Number of classes of the data (linked from the data module by the CLI).
        optimizer: The adapter's optimiser and per-step schedule over the run (default AdamW, lr 1e-3, cosine
            to zero); only the adapter's parameters are optimised.
        seed: Seed of the adapter's random initialisation (the benchmark cell's ``stitch_seed``).
        objective: ``task`` (cross-entropy through the target's back), ``match`` (squared error to the
            target's own activation at its cut, divided by its variance on the clean training split) or
            ``task+match`` (:data:`stitching.core.training.Objective`).
    """

    def __init__(
        self,
        source: ModelSource,
        target: ModelSource,
        source_cut: str | float,
        target_cut: str | float | None = None,
        adapter: AdapterConfig | None = None,
        num_classes: int = 10,
        optimizer: OptimizerSpec | None = None,
        seed: int = 0,
        objective: Objective = "task",
    ) -> None:
        super().__init__()
        # Checkpoints store these as dicts (see below); accept them back.
        source, target = _as(ModelSource, source), _as(ModelSource, target)
        adapter = _as(AdapterConfig, adapter or AdapterConfig(norm="bn", init="lstsq"))
        optimizer = _as(OptimizerSpec, optimizer or OptimizerSpec())
        if _given_hyperparameters.get() is not None:
            # Built by LightningCLI: keep its config dump (plain data with class paths), so that
            # `stitching test --ckpt_path` can parse the checkpoint's hyperparameters back.
            self.save_hyperparameters()
        else:  # plain dicts in the checkpoint, so it loads with torch.load(weights_only=True)
            self.save_hyperparameters(
                {
                    "source": asdict(source),
                    "target": asdict(target),
                    "source_cut": source_cut,
                    "target_cut": target_cut,
                    "adapter": asdict(adapter),
                    "num_classes": num_classes,
                    "optimizer": asdict(optimizer),
                    "seed": seed,
                    "objective": objective,
                }
            )
        self.optimizer_spec, self.seed, self.objective = optimizer, seed, objective
        self.match_scale = 1.0
        source_model = load_model(source, num_classes=num_classes)
        target_model = load_model(target, num_classes=num_classes)
        self.source_cut = get_cut(source_model, source_cut)
        self.target_cut = get_cut(target_model, self.source_cut.depth if target_cut is None else target_cut)
        self.source_front, self.source_back = (freeze(m) for m in split_model(source_model, self.source_cut))
        self.target_front, self.target_back = (freeze(m) for m in split_model(target_model, self.target_cut))
        self.source_spec, self.target_spec = self.source_cut.spec, self.target_cut.spec
        # lstsq needs data, which only exists once fit starts: the structure first, fitted in on_fit_start
        self.adapter = build_adapter(
            self.source_spec, self.target_spec, adapter, _structural_init(adapter), seed
        )
        self.adapter_config = adapter
        self.initial_adapter: nn.Module | None = None
        self.source_shares_labels = _num_outputs(source_model) == _num_outputs(target_model)
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict({name: _accuracy(num_classes) for name in EVALUATED})
                for stage in ("val", "test")
            }
        )
        self._fit_started = 0.0

    def train(self, mode: bool = True) -> StitchModule:
        """Only the adapter trains: frozen parts stay in eval mode whatever Lightning or a callback does."""
        super().train(mode)
        for part in (self.source_front, self.source_back, self.target_front, self.target_back):
            part.eval()
        if self.initial_adapter is not None:
            self.initial_adapter.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.source_front(x)
        return self.target_back(self.adapter(h))

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        resumed = self.trainer.ckpt_path is not None
        if self.adapter_config.init == "lstsq" and not resumed:
            self._init_lstsq()
        if self.objective != "task":
            self.match_scale = self._match_scale()
        if self.initial_adapter is None:
            self.initial_adapter = freeze(copy.deepcopy(self.adapter))

    def _eval_train(self):
        """The training split with evaluation preprocessing, from the data module."""
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "eval_dataset"):
            raise TypeError(
                "init='lstsq' and the match objectives read the training split with evaluation "
                f"preprocessing, which {type(datamodule).__name__} does not provide: give it an "
                "eval_dataset(split) method (stitching.data.ImageDataModule has one)"
            )
        return datamodule.eval_dataset("train")

    def _init_lstsq(self) -> None:
        """Fit the adapter by least squares on the clean training split, in place (the optimiser holds its
        parameters already), exactly as the benchmark fits it from its cached activations."""
        loader = eval_loader(self._eval_train())
        batches = front_batches(lambda x: (self.source_front(x), self.target_front(x)), loader, self.device)
        fitted = build_adapter(
            self.source_spec, self.target_spec, self.adapter_config, "lstsq", self.seed, batches
        )
        self.adapter.load_state_dict(fitted.state_dict())
        self.adapter.fit_stats = getattr(fitted, "fit_stats", None)

    def _match_scale(self) -> float:
        """The variance of the target's activations on the clean training split (its first rows), as the
        benchmark computes it (:meth:`stitching.core.training.MatchTargets.of`)."""
        loader = eval_loader(self._eval_train(), batch_size=MATCH_SCALE_ROWS)
        return MatchTargets.of(next(iter(front_batches(self.target_front, loader, self.device)))).scale

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        with torch.no_grad():
            h = self.source_front(x)
        targets = None
        if self.objective != "task":
            with torch.no_grad():
                targets = (self.target_front(x), self.match_scale)
        (loss,) = stitch_losses(
            [self.adapter], self.target_back, [h], y, objective=self.objective, targets=targets
        )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        metrics = self.metrics[stage]
        with torch.no_grad():
            h = self.source_front(x)
            logits = {
                "stitched": self.target_back(self.adapter(h)),
                "target": self.target_back(self.target_front(x)),
            }
            if self.source_shares_labels:
                logits["source"] = self.source_back(h)
            if self.initial_adapter is not None:
                logits["init_stitched"] = self.target_back(self.initial_adapter(h))
        for name, out in logits.items():
            metrics[name](out, y)
            self.log(f"{stage}/{name}_acc", metrics[name]["acc"], on_epoch=True, prog_bar=name == "stitched")
            if "acc_top5" in metrics[name]:
                self.log(f"{stage}/{name}_acc_top5", metrics[name]["acc_top5"], on_epoch=True)
        self.log(f"{stage}/loss", F.cross_entropy(logits["stitched"], y), on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_start(self) -> None:
        if self.initial_adapter is None and self.adapter_config.init == "lstsq":
            return  # evaluated without fit: no initial adapter to compare with
        if self.initial_adapter is None:
            self.initial_adapter = freeze(copy.deepcopy(self.adapter))

    def on_train_end(self) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_started

    def configure_optimizers(self) -> Any:
        total = int(self.trainer.estimated_stepping_batches)
        optimizer, schedule = self.optimizer_spec.build(self.adapter.parameters(), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @property
    def adapter_parameters(self) -> int:
        return num_trainable_parameters(self.adapter)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen parts are rebuilt from their sources; only the adapter (and its initial copy) is state.
        checkpoint["state_dict"] = {
            k: v
            for k, v in checkpoint["state_dict"].items()
            if k.startswith(("adapter.", "initial_adapter."))
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if any(k.startswith("initial_adapter.") for k in state) and self.initial_adapter is None:
            self.initial_adapter = freeze(copy.deepcopy(self.adapter))
        frozen = {
            k: v for k, v in self.state_dict().items() if not k.startswith(("adapter.", "initial_adapter."))
        }
        state.update(frozen)


def _as(cls, value):
    return cls(**value) if isinstance(value, dict) else value


def _accuracy(num_classes: int) -> MetricCollection:
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


def _structural_init(config: AdapterConfig) -> str:
    return "random" if config.init == "lstsq" else config.init


def _num_outputs(model: nn.Module) -> int | None:
    return getattr(model, "num_classes", None)
