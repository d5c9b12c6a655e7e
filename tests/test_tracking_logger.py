"""``StitchingWandbLogger`` with a tiny LightningModule, offline: config, accuracies and the adapter size land
in the run (read back from the ``.wandb`` stream); the id is stable so a second fit resumes the same run."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import wandb
from jsonargparse import Namespace
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from wandb_offline import offline_runs

from stitching.tracking import StitchingWandbLogger, default_run_id, prepare_cli_logger


class TinyStitch(L.LightningModule):
    """Frozen front and back around a trainable 1x1 'adapter'; logs the accuracies StitchModule logs."""

    def __init__(self, width: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.front = nn.Linear(8, width).requires_grad_(False)
        self.adapter = nn.Linear(width, width)
        self.back = nn.Linear(width, 3).requires_grad_(False)

    @property
    def adapter_parameters(self) -> int:
        return sum(p.numel() for p in self.adapter.parameters())

    def forward(self, x):
        return self.back(self.adapter(self.front(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        for name, logits in (
            ("stitched", self(x)),
            ("target", self.back(self.front(x))),
            ("source", self(x)),
        ):
            self.log(f"val/{name}_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.adapter.parameters(), lr=self.hparams.lr)


def loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)), 16
    )


def fit(logger) -> L.Trainer:
    # fast_dev_run would swap the logger for a DummyLogger: a two-batch epoch exercises the real one.
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyStitch(), loader(), loader())
    return trainer


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_RUN_ID",
        "WANDB_SWEEP_ID",
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr("stitching.tracking._mode._settings_have_key", lambda: False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two fits with the same save_dir and no key: offline, one W&B run id, each run finished."""
    save_dir = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID"):
            mp.delenv(var, raising=False)
        mp.setenv("NETRC", str(save_dir / "no-netrc"))
        mp.setattr("stitching.tracking._mode._settings_have_key", lambda: False)
        loggers, trainers = [], []
        for _ in range(2):
            logger = StitchingWandbLogger(project="stitching-test", name="tiny", save_dir=save_dir)
            loggers.append(logger)
            trainers.append(fit(logger))
            assert wandb.run is None  # finished, not left open for the next run to be merged into
    return save_dir, loggers, trainers, offline_runs(save_dir)


def test_offline_chosen_without_a_key(fitted):
    _, loggers, _, runs = fitted
    assert [lg.mode for lg in loggers] == ["offline", "offline"]
    assert len(runs) == 2  # one offline directory per fit ...


def test_stable_id_resumes_the_same_run(fitted):
    save_dir, _, _, runs = fitted
    expected = default_run_id(save_dir, "tiny")
    assert expected and [r.id for r in runs] == [expected, expected]  # ... both for the same W&B run
    assert all(r.exit_code == 0 for r in runs)


def test_config_accuracies_and_adapter_size_in_the_run(fitted):
    _, _, trainers, runs = fitted
    for trainer, run in zip(trainers, runs, strict=True):
        module = trainer.lightning_module
        assert run.config["width"] == 4 and run.config["lr"] == 0.1
        assert run.summary["adapter_params"] == module.adapter_parameters == 4 * 4 + 4
        assert run.summary["params/trainable"] == module.adapter_parameters
        assert run.summary["params/total"] == sum(p.numel() for p in module.parameters())
        for name in ("stitched", "target", "source"):
            key = f"val/{name}_acc"
            assert run.summary[key] == pytest.approx(trainer.callback_metrics[key].item())


def test_explicit_id_and_mode_win(no_credentials, tmp_path):
    logger = StitchingWandbLogger(project="p", id="given-id", mode="disabled", save_dir=tmp_path)
    assert logger.mode == "disabled" and logger._wandb_init["id"] == "given-id"
    assert logger._wandb_init["resume"] == "allow"


def test_default_run_id_sources(no_credentials, monkeypatch, tmp_path):
    assert default_run_id() is None  # nothing stable to derive from: wandb picks a fresh id
    by_dir = default_run_id(tmp_path, "x")
    assert by_dir == default_run_id(tmp_path / ".", "x") != default_run_id(tmp_path / "other", "x")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "812")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    slurm = default_run_id(None, "x")
    assert slurm.startswith("slurm-812-3-") and slurm == default_run_id(None, "x")
    monkeypatch.setenv("WANDB_RUN_ID", "agent-run")
    assert default_run_id(tmp_path, "x") is None  # wandb takes WANDB_RUN_ID (sweep agents set it)


def test_prepare_cli_logger_uses_the_run_dir():
    logger = Namespace(
        class_path="stitching.tracking.StitchingWandbLogger", init_args=Namespace(save_dir=None)
    )
    other = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="csv"))
    config = Namespace(trainer=Namespace(default_root_dir="runs/x/20261123-1200", logger=[logger, other]))
    prepare_cli_logger(config)
    assert logger.init_args.save_dir == "runs/x/20261123-1200" and other.init_args.save_dir == "csv"
