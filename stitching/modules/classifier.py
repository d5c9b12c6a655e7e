"""ClassifierModule: trains (or fine-tunes the head of) one image classifier; used to build the model zoo."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from stitching.core.optim import schedule_factor
from stitching.models import create_model


class ClassifierModule(L.LightningModule):
    """A timm or ``mini_`` classifier trained with AdamW, label smoothing and a cosine schedule.

    The network is ``self.model``, so checkpoint keys read ``model.<timm key>``; the hyperparameters (with
    ``model_name``) are saved in every checkpoint. Logged: ``train/loss``, ``train/acc``, ``val/loss``,
    ``val/acc``, ``val/acc_best``, ``test/loss``, ``test/acc`` and, with more than 5 classes, ``*/acc_top5``.

    Args:
        model_name: A name known to ``stitching.models.create_model`` (timm names and ``mini_*``).
        num_classes: Classifier outputs; linked from the data module by the CLI.
        model_kwargs: Extra keyword arguments for ``create_model``.
        pretrained: Start from the model's pretrained weights (a new head when ``num_classes`` differs).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        scheduler: ``"cosine"`` decays to 0 over the whole run (per step, after warmup); ``"constant"``.
        warmup_epochs: Linear warmup length in epochs (fractional allowed).
        label_smoothing: Cross-entropy label smoothing.
        head_only: Train only the classifier head (``get_classifier()``), the rest frozen in eval mode.
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int = 10,
        model_kwargs: dict[str, Any] | None = None,
        pretrained: bool = False,
        lr: float = 2e-3,
        weight_decay: float = 0.05,
        scheduler: Literal["cosine", "constant"] = "cosine",
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        head_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(
            model_name, pretrained=pretrained, num_classes=num_classes, **(model_kwargs or {})
        )
        if head_only:
            self.model.requires_grad_(False)
            self.model.get_classifier().requires_grad_(True)
        # One metric collection per stage: state must not leak between train, val and test.
        self.train_metrics = self._accuracy_metrics(num_classes)
        self.val_metrics = self._accuracy_metrics(num_classes)
        self.test_metrics = self._accuracy_metrics(num_classes)
        self.val_acc_best = MaxMetric()

    @staticmethod
    def _accuracy_metrics(num_classes: int) -> torch.nn.ModuleDict:
        metrics = {"acc": MulticlassAccuracy(num_classes, average="micro")}
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        return torch.nn.ModuleDict(metrics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        if self.hparams.head_only:  # frozen BatchNorm statistics must not drift
            self.model.eval()
            self.model.get_classifier().train()

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        for name, metric in getattr(self, f"{stage}_metrics").items():
            metric(logits, y)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=False)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
        )
        if self.hparams.scheduler == "constant" and not self.hparams.warmup_epochs:
            return {"optimizer": optimizer}
        total = max(1, self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(total * self.hparams.warmup_epochs / epochs)
        factor = schedule_factor(self.hparams.scheduler, total, warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
