"""Heatmap colour maps (`--cmap`): how a signed relevance map becomes an RGB image.

Colour maps are small registered objects: `CMAPS` maps the `--cmap` name to a
`HeatmapColours`; adding one is an object here plus its name in the settings' `Cmap`
`Literal` (a test keeps them equal).

`reference` (the default) is what the study drew: zennit's signed, zero-centred map
`seismic` (`0000d0,80:d0d0d0,d00000`: negative blue, zero light grey, positive red) on a
symmetric scale, i.e. `zennit.image.imgify(heatmap, cmap="seismic", symmetric=True)`:
v = (R + m) / 2m with m = max |R|, palette index = int(255 v). Zero relevance therefore
lands on index 127 (#ceced0, a hair from the palette's centre #d0d0d0), +m on red #d00000,
-m on blue #0000d0, and equal colours mean equal relevance of either sign.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np


class HeatmapColours(ABC):
    """A `--cmap`: (H, W) relevance -> uint8 (H, W, 3)."""

    @abstractmethod
    def rgb(self, heatmap: np.ndarray) -> np.ndarray:
        """float (H, W) -> uint8 (H, W, 3)."""


class ZennitSymmetric(HeatmapColours):
    """A zennit colour map on zennit's symmetric scale (`imgify(..., symmetric=True)`)."""

    def __init__(self, source: str) -> None:
        self.source = source  # a zennit.image.CMAPS name or a zennit colour-map code

    @cached_property
    def palette(self) -> np.ndarray:
        """uint8 (256, 3), zennit's palette of the map."""
        from zennit.image import palette

        return np.asarray(palette(self.source), dtype=np.uint8).reshape(256, 3)

    def rgb(self, heatmap: np.ndarray) -> np.ndarray:
        h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64))
        m = float(np.abs(h).max()) if h.size else 0.0
        # an all-zero map is all zero-colour (zennit would divide by zero here)
        v = (h + m) / (2.0 * m) if m > 0 else np.full_like(h, 0.5)
        index = (v * 255.0).clip(0, 255).astype(np.uint8)  # truncation, as zennit does
        return self.palette[index]


class MatplotlibRamp(HeatmapColours):
    """A matplotlib colour map from the map's minimum to its maximum (`plt.imsave`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def rgb(self, heatmap: np.ndarray) -> np.ndarray:
        from matplotlib import colormaps

        h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64))
        lo, hi = (float(h.min()), float(h.max())) if h.size else (0.0, 0.0)
        v = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)  # constant: the low end
        rgba = colormaps[self.name](v)
        return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


CMAPS: dict[str, HeatmapColours] = {
    "reference": ZennitSymmetric("seismic"),
    "bwr": ZennitSymmetric("bwr"),
    "coldnhot": ZennitSymmetric("coldnhot"),
    "reds": MatplotlibRamp("Reds"),
}
