"""The harness's LightningCLI, below everything that trains: ``stitching fit|validate|test`` and the model
store (:mod:`stitching.zoo`) both build on :class:`StitchingCLI`.

Model and data classes are chosen in YAML by full ``class_path``; ``num_classes`` is linked from the data
module to the model at instantiation; the seed defaults to 0. Each run writes under its own
``runs/<config-name>/<timestamp>/`` unless ``trainer.default_root_dir`` is set.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from stitching._cli_errors import StitchingArgumentParser

RUNS_DIR = Path("runs")


def _check_ckpt_path(parser, path) -> None:
    """A ``--ckpt_path`` file that is missing, corrupt or refused: one line before anything is built."""
    if not path or str(path) in ("last", "best", "hpc", "registry"):
        return
    from stitching.models import read_checkpoint

    try:
        ckpt = read_checkpoint(path, mmap=True)
    except (FileNotFoundError, ValueError) as err:
        parser.error(f"--ckpt_path: {err}")
    if not isinstance(ckpt, dict):
        parser.error(f"--ckpt_path: {str(path)!r} is not a checkpoint (it holds a {type(ckpt).__name__})")


class StitchingCLI(LightningCLI):
    """LightningCLI with any LightningModule/LightningDataModule, linked ``num_classes`` and per-run dirs."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        # Runs get their own dirs, but a re-run with an explicit default_root_dir must not fail either.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", StitchingArgumentParser)
        kwargs.setdefault("parser_kwargs", {"prog": "stitching"})
        from stitching.launch.slurm import lightning_plugins_for_slurm  # on use: submitit is slow to import

        plugins = lightning_plugins_for_slurm()  # inside a submitit job, submitit alone owns requeue
        if plugins:
            kwargs.setdefault("trainer_defaults", {"plugins": plugins})
        self._start = time.perf_counter()
        super().__init__(L.LightningModule, L.LightningDataModule, args=args, run=run, **kwargs)

    def _parse_ckpt_path(self) -> None:
        if self.config.get("subcommand"):  # Lightning reads it here first, with a raw traceback on bad bytes
            _check_ckpt_path(self.parser, self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _run_config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._run_config()
        if config.trainer.default_root_dir is None:
            files = config.get("config") or []
            name = Path(str(files[-1])).stem if files else "cli"
            config.trainer.default_root_dir = str(_fresh_dir(RUNS_DIR / name))
        from stitching.tracking.logger import prepare_cli_logger  # on use: pandas and W&B are slow to import

        prepare_cli_logger(config)  # a W&B logger's run id follows the run dir, so a resumed run continues it
        if self.subcommand in ("validate", "test") and config.trainer.devices not in (1, "1"):
            # A distributed sampler pads uneven data (63 samples scored as 64): final scores on one device.
            print(
                f"stitching {self.subcommand}: scoring on a single device (trainer.devices="
                f"{config.trainer.devices} -> 1) so distributed padding cannot bias the scores"
            )
            config.trainer.devices = 1

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            # Construction errors are configuration errors (unknown model, missing data, bad checkpoint):
            # report them like a bad key, in one line, instead of a traceback.
            self.parser.error(f"{type(e).__name__}: {e}")

    def before_fit(self) -> None:
        self._start = time.perf_counter()

    def after_fit(self) -> None:
        print_summary(self.trainer, self.model, self.datamodule, time.perf_counter() - self._start)

    after_validate = after_fit
    after_test = after_fit


def _fresh_dir(parent: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = parent / stamp, 0
    while path.exists():
        n += 1
        path = parent / f"{stamp}-{n}"
    return path


def print_summary(trainer: L.Trainer, model: L.LightningModule, datamodule, seconds: float) -> None:
    """A few lines at the end of a run: what ran, its accuracies, how long, where the checkpoint is."""
    name = model.hparams.get("model_name") if hasattr(model, "hparams") else None
    lines = [f"model         {type(model).__name__}" + (f" ({name})" if name else "")]
    if datamodule is not None:
        sizes = datamodule.hparams.get("split_sizes") if hasattr(datamodule, "hparams") else None
        lines.append(f"data          {type(datamodule).__name__}" + (f" {sizes}" if sizes else ""))
    metrics = trainer.callback_metrics
    for key in sorted(metrics):
        if key.split("/")[0] in ("val", "test") and "acc" in key:
            lines.append(f"{key:<13} {float(metrics[key]):.4f}")
    lines.append(f"time          {seconds:.1f} s")
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and (ckpt.best_model_path or ckpt.last_model_path):
        lines.append(f"checkpoint    {ckpt.best_model_path or ckpt.last_model_path}")
    if trainer.world_size > 1:
        lines.append(
            f"note          scores above come from {trainer.world_size} devices, whose distributed sampler "
            "may pad the data; final scores on one device: stitching validate|test --ckpt_path CHECKPOINT"
        )
    if trainer.is_global_zero:
        print("\n".join(lines), flush=True)
