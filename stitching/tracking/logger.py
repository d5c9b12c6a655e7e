"""``StitchingWandbLogger``: Lightning's WandbLogger that picks offline mode without a key, resumes the same
W&B run under a stable id, records parameter counts and finishes its run when the trainer is done."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from stitching.nn import num_parameters, num_trainable_parameters
from stitching.tracking._mode import project_name, resolve_mode, stable_run_id


class StitchingWandbLogger(WandbLogger):
    """WandbLogger for ``stitching fit``.

    YAML: ``trainer.logger: {class_path: stitching.tracking.StitchingWandbLogger, init_args: {...}}``.

    Args:
        project: W&B project (default: ``WANDB_PROJECT``, else ``stitching``).
        mode: ``online``, ``offline`` or ``disabled``; default: ``WANDB_MODE``, else online only when an API
            key is configured (``WANDB_API_KEY``, ``~/.netrc``, wandb settings).
        id: W&B run id. Default: ``WANDB_RUN_ID`` if set (sweep agents set it); else derived from the SLURM
            job (stable across requeues) or from an explicitly given ``save_dir``; else a fresh random id.
            With ``resume="allow"`` a resumed or requeued run continues the same W&B run.
        finish: call ``finish()`` on the run this logger started when the trainer finalizes, so the next
            run in the same process is not merged into it (WandbLogger alone never finishes its run).
        kwargs: everything else goes to ``WandbLogger`` and ``wandb.init`` (entity, group, tags, ...).
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        save_dir: str | os.PathLike | None = None,
        id: str | None = None,
        mode: str | None = None,
        finish: bool = True,
        log_model: bool | str = False,
        **kwargs: Any,
    ) -> None:
        mode = resolve_mode(mode)
        if mode == "offline" and log_model:
            log_model = False  # checkpoints cannot be uploaded offline; they stay on disk
        if id is None and kwargs.get("version") is None:
            id = default_run_id(save_dir, name)
        kwargs.setdefault("resume", "allow")
        super().__init__(
            project=project_name(project),
            name=name,
            save_dir=os.fspath(save_dir) if save_dir is not None else ".",
            id=id,
            mode=mode,
            log_model=log_model,
            **kwargs,
        )
        self.mode = mode
        self._finish = finish
        self._owns_run = False

    @property
    def experiment(self):
        import wandb

        # Lightning reuses any active run; remember whether the run is ours before it decides.
        created = self._experiment is None and wandb.run is None
        experiment = super().experiment
        if created and self._experiment is not None:
            self._owns_run = True
            self._id = self._experiment.id  # a finished run resumes under the same id
            self._wandb_init["id"] = self._id
        return experiment

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Called by the trainer with the LightningModule: record its parameter counts in the summary."""
        counts = {
            "params/total": num_parameters(model),
            "params/trainable": num_trainable_parameters(model),
        }
        adapter = getattr(model, "adapter_parameters", None)
        if adapter is not None:
            counts["adapter_params"] = int(adapter() if callable(adapter) else adapter)
        self.experiment.summary.update(counts)
        self.experiment.config.update(counts, allow_val_change=True)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._finish and self._owns_run and self._experiment is not None:
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None  # a later fit/test resumes the same id
            self._owns_run = False


def default_run_id(save_dir: str | os.PathLike | None = None, name: str | None = None) -> str | None:
    """The run id a ``StitchingWandbLogger`` takes when none is given (see its ``id`` argument)."""
    if os.environ.get("WANDB_RUN_ID"):
        return None  # wandb reads it itself (sweep agents and explicit overrides)
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:  # a requeued SLURM job keeps its job id (and array task id)
        task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        return stable_run_id(job, task, name, prefix=f"slurm-{job}-{task}".rstrip("-"))
    if save_dir is not None:
        return stable_run_id(str(Path(save_dir).resolve()), name, prefix=name or "run")
    return None


def prepare_cli_logger(config: Any) -> None:
    """For ``LightningCLI.before_instantiate_classes``: give every ``StitchingWandbLogger`` in
    ``config.trainer.logger`` the run's ``default_root_dir`` as ``save_dir`` (when unset), so its id is
    derived from the run directory and a requeued run that reuses the directory resumes the same W&B run."""
    trainer = config.trainer
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        class_path = getattr(logger, "class_path", None) or ""
        if class_path.split(".")[-1] != StitchingWandbLogger.__name__:
            continue
        args = logger.init_args
        if getattr(args, "save_dir", None) is None and trainer.default_root_dir is not None:
            args.save_dir = str(trainer.default_root_dir)
