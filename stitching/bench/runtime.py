"""Where cells run: the accelerator, how many devices train each cell, and the speed switches.

A `Runtime` is a process setting, not part of a cell's config: the same cell gives the same record on one CPU
or on several GPUs (up to floating-point summation order and, off CUDA, per-device BatchNorm statistics).

With ``devices > 1`` each device runs the cell in its own process (a rank) through Lightning Fabric: every
rank computes the activations it needs, the ranks train the adapter together (each takes its share of every
batch; DistributedDataParallel averages the gradients), and rank 0 alone scores the trained adapter on the
whole test set on one device, so no distributed sampler pads or drops samples, and writes the record. The
processes come from SLURM (one task per device, ``--executor slurm``) or, on one machine, from Fabric
starting the same command once per extra device, as Lightning's Trainer does. Fabric installs no SLURM signal
handler, so submitit alone still owns requeue.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import torch
from jsonargparse import ArgumentParser, Namespace

from stitching.core.speed import Speed

Accelerator = Literal["auto", "cpu", "gpu", "cuda"]
ACCELERATORS: tuple[str, ...] = typing.get_args(Accelerator)
_FABRICS: dict[tuple, Any] = {}


@dataclass
class Runtime:
    """The devices and speed switches cells run with (``stitching bench --trainer.* --speed.*``)."""

    accelerator: Accelerator = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``gpu`` or ``cuda``."""
    devices: int = 1
    """Devices that train one cell together (DDP); more than 1 starts one process per device."""
    ddp_timeout_min: int = 720
    """How long a rank waits at a collective, e.g. while rank 0 trains a base model on first use."""
    speed: Speed = field(default_factory=Speed)
    """Speed switches (``--speed.*``): how adapters train on the device, never what they compute."""

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            choices = ", ".join(ACCELERATORS)
            raise ValueError(f"unknown accelerator {self.accelerator!r}; choose one of {choices}")
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")

    @property
    def distributed(self) -> bool:
        return self.devices > 1

    def single_device(self) -> torch.device:
        """The device of a one-device run (checked where cells run: a SLURM login node may have no GPU)."""
        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"accelerator {self.accelerator!r} but torch sees no CUDA device here; use "
                "--trainer.accelerator cpu, or ask SLURM for GPUs (--slurm.gpus_per_node)"
            )
        cuda = self.accelerator != "cpu" and torch.cuda.is_available()
        return torch.device("cuda" if cuda else "cpu")

    def check_here(self) -> None:
        """Raise ``ValueError`` when this machine lacks the devices asked for: checked once, before any cell,
        by a run whose cells run here (not on SLURM nodes)."""
        if self.accelerator not in ("gpu", "cuda"):
            return
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found < self.devices:
            raise ValueError(
                f"--trainer.accelerator {self.accelerator} asks for {self.devices} CUDA device(s), but torch "
                f"sees {found} here; use --trainer.accelerator cpu (or auto), or --executor slurm with "
                "--slurm.gpus_per_node"
            )

    def fabric(self):
        """The launched Lightning Fabric of this process (one per process), or None for one device.

        On one machine the first call starts ``devices - 1`` copies of the running command (ranks 1..N-1);
        under SLURM (one task per device) or torchrun the processes exist already and only join.
        """
        if not self.distributed:
            return None
        key = (self.accelerator, self.devices)
        if key not in _FABRICS:
            if _FABRICS:
                raise RuntimeError(
                    f"this process already runs DDP on {next(iter(_FABRICS))}; one runtime per process"
                )
            from lightning.fabric import Fabric
            from lightning.fabric.strategies import DDPStrategy

            fabric = Fabric(
                accelerator=self.accelerator,
                devices=self.devices,
                strategy=DDPStrategy(timeout=timedelta(minutes=self.ddp_timeout_min)),
            )
            fabric.launch()
            _FABRICS[key] = fabric
        return _FABRICS[key]

    def is_global_zero(self) -> bool:
        """True in the process that writes records and reports (rank 0, or the only process)."""
        fabric = self.fabric()
        return fabric is None or fabric.global_rank == 0


def add_runtime_arguments(parser: ArgumentParser) -> None:
    """Add the `Runtime` fields as ``--trainer.<field>`` and the `Speed` switches as ``--speed.<switch>``
    (jsonargparse dataclass groups; a switch takes on/off/true/false, or null for automatic)."""
    if not isinstance(parser, ArgumentParser):
        raise TypeError("add_runtime_arguments needs a jsonargparse.ArgumentParser")
    parser.add_class_arguments(Runtime, "trainer", skip={"speed"})
    parser.add_class_arguments(Speed, "speed")


def runtime_from_args(args: Namespace) -> Runtime:
    """The `Runtime` given by the flags of `add_runtime_arguments` (unset flags keep the defaults)."""
    return Runtime(**args.trainer.as_dict(), speed=Speed(**args.speed.as_dict()))
