"""The XKCD colour survey's names with their sRGB values (shipped by matplotlib) and CIELAB coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stitching.prh._optional import require


@dataclass(frozen=True)
class Colours:
    """Colour names (cleaned for a text model) and their sRGB values in [0, 1], row for row."""

    names: list[str]
    rgb: np.ndarray
    """``(N, 3)`` float64 sRGB in [0, 1]."""

    def __post_init__(self) -> None:
        if self.rgb.ndim != 2 or self.rgb.shape[1] != 3 or len(self.names) != self.rgb.shape[0]:
            raise ValueError(
                f"Colours: names and rgb must pair up row for row, got {len(self.names)} names and rgb of "
                f"shape {tuple(self.rgb.shape)}"
            )

    def subset(self, limit: int | None) -> Colours:
        """The first ``limit`` colours (all of them for None)."""
        return self if limit is None else Colours(self.names[:limit], self.rgb[:limit])


def clean_name(name: str) -> str:
    """``"xkcd:dark sky blue"`` -> ``"dark sky blue"``: no prefix, no stray spaces."""
    return " ".join(name.split(":", 1)[-1].split())


def xkcd_colours() -> Colours:
    """The 949 colours of ``matplotlib.colors.XKCD_COLORS`` in matplotlib's order."""
    from matplotlib.colors import XKCD_COLORS, to_rgb

    names = list(XKCD_COLORS)
    return Colours([clean_name(n) for n in names], np.array([to_rgb(XKCD_COLORS[n]) for n in names]))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* in [0, 100]) of sRGB values in [0, 1] under D65, through ``colour-science``."""
    colour = require("colour", "sRGB -> CIELAB conversion")
    rgb = np.asarray(rgb, dtype=np.float64)
    xyz = colour.sRGB_to_XYZ(rgb)
    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    return np.asarray(colour.XYZ_to_Lab(xyz, d65))


def hue_order(rgb: np.ndarray) -> np.ndarray:
    """Indices that sort colours by hue, then lightness (greys, with no hue, first)."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    hue = np.where(hsv[:, 1] < 0.1, -1.0, hsv[:, 0])
    return np.lexsort((hsv[:, 2], hue))
