"""`SlurmOptions`: what a SLURM job asks for, from a YAML preset in ``configs/slurm/`` plus overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stitching._utils import did_you_mean

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "slurm"


@dataclass
class SlurmOptions:
    """Resources and policy for the SLURM jobs that run benchmark cells (one job per cell or group)."""

    partition: str | None = None
    """``--partition``; None: the cluster's default partition."""
    gpus_per_node: int = 0
    """``--gpus-per-node``; 0 asks for none."""
    tasks_per_node: int = 1
    """``--ntasks-per-node``: one task per device when each cell trains on several (``--trainer.devices``)."""
    cpus_per_task: int = 2
    """``--cpus-per-task`` (data-loader workers + 1)."""
    mem_gb: float | None = None
    """``--mem`` in GB; None: the cluster default (DefMemPerCPU x CPUs)."""
    timeout_min: int = 60
    """``--time`` in minutes; near the limit the job checkpoints and requeues itself."""
    array_parallelism: int = 64
    """How many jobs of the array may run at once (``--array=0-N%P``)."""
    account: str | None = None
    """``--account`` to charge."""
    qos: str | None = None
    """``--qos``."""
    job_name: str = "stitching"
    """``--job-name``."""
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    """Extra ``#SBATCH --key=value`` lines, e.g. ``{constraint: volta32gb, mail-type: END}``."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before the job starts, e.g. ``module load cuda``."""
    folder: str | None = None
    """Log and pickle folder, containing ``%j``; None: ``<results dir>/slurm/%j``."""
    max_num_timeout: int = 3
    """How often a job may time out and requeue before it is given up."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which the job is signalled to checkpoint and requeue."""
    poll_s: float = 10.0
    """Seconds between status checks while waiting."""

    def __post_init__(self) -> None:
        counts = ("gpus_per_node", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism")
        for name in (*counts, "max_num_timeout"):
            low = 0 if name in ("gpus_per_node", "max_num_timeout") else 1
            if getattr(self, name) < low:
                raise ValueError(f"SlurmOptions.{name} must be >= {low}, got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"SlurmOptions.mem_gb must be positive or None, got {self.mem_gb}")
        if self.folder is not None and "%j" not in self.folder:
            # submitit substitutes the job id for %j; other patterns (%A_%a) make it raise later
            raise ValueError(f"SlurmOptions.folder must contain '%j' (e.g. 'logs/%j'), got {self.folder!r}")
        if self.poll_s <= 0:
            raise ValueError(f"SlurmOptions.poll_s must be positive, got {self.poll_s}")

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``submitit.AutoExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": self.timeout_min,
            "cpus_per_task": self.cpus_per_task,
            "tasks_per_node": self.tasks_per_node,
            "nodes": 1,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_additional_parameters": dict(self.additional_parameters),
            "slurm_setup": list(self.setup),
        }
        # None and 0 GPUs are left out: sbatch rejects any GPU flag where the cluster has no GRES
        optional = {
            "gpus_per_node": self.gpus_per_node or None,
            "mem_gb": self.mem_gb,
            "slurm_partition": self.partition,
            "slurm_account": self.account,
            "slurm_qos": self.qos,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


def option_names() -> list[str]:
    return [f.name for f in dataclasses.fields(SlurmOptions)]


def list_presets() -> list[str]:
    """Names of the presets shipped in ``configs/slurm/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_path(preset: str | Path) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"SLURM preset file {path} does not exist")
        return path
    path = PRESET_DIR / f"{preset}.yaml"
    if not path.exists():
        hint = did_you_mean(preset, list_presets())
        raise ValueError(
            f"unknown SLURM preset {preset!r}; {hint}available: {', '.join(list_presets())} (or a .yaml path)"
        )
    return path


def _check_keys(values: dict[str, Any], where: str) -> None:
    for key in values:
        if key not in option_names():
            hint = did_you_mean(key, option_names())
            raise ValueError(
                f"unknown SLURM option {key!r} in {where}; {hint}valid: {', '.join(option_names())}"
            )


def load_slurm_options(preset: str | Path | None = None, **overrides: Any) -> SlurmOptions:
    """`SlurmOptions` from a preset (a name in ``configs/slurm/`` or a YAML path), then ``overrides``.

    ``additional_parameters`` from overrides are merged into the preset's; every other key replaces it.
    """
    values: dict[str, Any] = {}
    if preset is not None:
        path = _preset_path(preset)
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"SLURM preset {path} must be a mapping of option: value")
        _check_keys(values, str(path))
    _check_keys(overrides, "overrides")
    extra = {**values.get("additional_parameters", {}), **overrides.pop("additional_parameters", {})}
    return SlurmOptions(**{**values, **overrides, "additional_parameters": extra})
