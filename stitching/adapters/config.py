"""Adapter options as a plain frozen dataclass, so LightningCLI / YAML can carry them."""

from __future__ import annotations

from dataclasses import dataclass, fields

from stitching._utils import did_you_mean

NORMS = ("none", "bn", "bn_pre", "bn_post")
INITS = ("random", "identity", "lstsq")
RESAMPLES = ("bilinear", "area", "nearest")


def check_choice(kind: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming close matches when ``value`` is not one of ``choices``."""
    if value in choices:
        return
    hint = did_you_mean(value, choices)
    raise ValueError(f"unknown {kind} {value!r}; {hint}choose from {', '.join(choices)}")


@dataclass(frozen=True)
class AdapterConfig:
    """How to build and initialise an adapter (see :mod:`stitching.adapters`)."""

    norm: str = "bn"
    """BatchNorm placement: "bn" (before and after the 1x1 conv, as Bansal et al. 2021), "bn_pre",
    "bn_post" or "none"."""
    rank: int | None = None
    """None: a full 1x1 conv. An int r with 1 <= r < min(C_in, C_out): a C_in -> r -> C_out pair."""
    init: str = "random"
    """"random" (PyTorch default), "identity" (equal channel counts only) or "lstsq" (ridge regression on
    data: needs ``data``)."""
    bias: bool = True
    """Whether the (last) 1x1 conv has a bias."""
    resample: str = "bilinear"
    """How a feature map is brought to the target grid: "bilinear" (antialiased, so downsampling
    low-pass filters instead of aliasing), "area" (adaptive average pooling) or "nearest"."""
    ridge: float = 1e-3
    """Relative ridge strength for ``init="lstsq"``: lambda = ridge * trace(Xc^T Xc) / C_in."""

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, NORMS)
        check_choice("init", self.init, INITS)
        check_choice("resample", self.resample, RESAMPLES)
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int)):
            raise TypeError(f"rank must be an int or None, got {self.rank!r}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1 (or None for a full-rank 1x1 conv), got {self.rank}")
        if self.ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")

    @property
    def norm_pre(self) -> bool:
        return self.norm in ("bn", "bn_pre")

    @property
    def norm_post(self) -> bool:
        return self.norm in ("bn", "bn_post")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
