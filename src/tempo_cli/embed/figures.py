"""The pictures of `tempo embed`: 2-D maps (one panel per checkpoint) and nearest-neighbour
grids (one block per checkpoint, the same query in the same row of every block).

Both are drawn from plain arrays, so the study's report composes the arms' panels from
each arm's files. Figures are `matplotlib.figure.Figure` (no pyplot). A grid block is one
image: the thumbnails with their borders drawn into the pixels (one `imshow` per block
instead of an axes per thumbnail: a 12 x 6 grid of four arms would be 288 axes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

#: Border colours (RGB): the query, a neighbour of its class, of another class.
QUERY_RGB = (70, 70, 70)
SAME_RGB = (0, 158, 60)
OTHER_RGB = (214, 39, 40)
#: The mark of a neighbour from the query's own group (video, session, person).
GROUP_RGB = (255, 204, 0)
#: Thumbnail side in the grids (pixels).
GRID_THUMB = 64


def _text(s: object) -> str:
    """A user string as plain matplotlib text: `$` would start mathtext."""
    return str(s).replace("$", r"\$")


def class_colours(n: int) -> list[tuple[float, float, float]]:
    """n distinct colours: tab20, then tab20b, then evenly spaced hues."""
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    def rgb(c: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
        return float(c[0]), float(c[1]), float(c[2])

    base = [rgb(colormaps["tab20"](i)) for i in range(20)]
    base += [rgb(colormaps["tab20b"](i)) for i in range(20)]
    if n <= len(base):
        return base[:n]
    return [rgb(hsv_to_rgb((i / n, 0.75, 0.85))) for i in range(n)]


@dataclass
class MapPanel:
    """One checkpoint's map: title, xy float (n, 2), labels int (n,) (class indices)."""

    title: str
    xy: np.ndarray
    labels: np.ndarray


def map_figure(panels: list[MapPanel], class_names: list[str], title: str) -> Figure:
    """One scatter panel per checkpoint, points coloured by class, each class's name at
    the median of its points (a legend of 24 letters would hide the points)."""

    from matplotlib import patheffects
    from matplotlib.figure import Figure

    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 4.2 * rows + 0.4))
    colours = class_colours(len(class_names))
    outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(
            panel.xy[:, 0],
            panel.xy[:, 1],
            c=[colours[k] for k in panel.labels.tolist()],
            s=9,
            linewidths=0,
        )
        for k in np.unique(panel.labels).tolist():
            x, y = np.median(panel.xy[panel.labels == k], axis=0)
            ax.text(x, y, _text(class_names[k]), fontsize=8, weight="bold", ha="center",
                    va="center", color=colours[k], path_effects=outline)  # fmt: skip
        ax.set_title(_text(panel.title), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    _title(fig, title)
    return fig


def _title(fig: Figure, title: str) -> None:
    """The figure's title in a strip of its own above the panels (their titles stay clear)."""
    fig.suptitle(_text(title), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))


def _framed(img: np.ndarray, rgb: tuple[int, int, int], border: int) -> np.ndarray:
    """uint8 (S, S, 3) inside a border of colour rgb: (S + 2b, S + 2b, 3)."""
    side = img.shape[0] + 2 * border
    out = np.empty((side, side, 3), np.uint8)
    out[:] = rgb
    out[border:-border, border:-border] = img
    return out


def _mark_group(cell: np.ndarray, border: int) -> None:
    """A yellow square with a black edge in the thumbnail's top-left corner (in place)."""
    size = max(cell.shape[0] // 5, 5)
    lo = border + 1
    cell[lo : lo + size, lo : lo + size] = (0, 0, 0)
    cell[lo + 1 : lo + size - 1, lo + 1 : lo + size - 1] = GROUP_RGB


def neighbour_mosaic(
    queries: np.ndarray,
    neighbours: np.ndarray,
    same_class: np.ndarray,
    same_group: np.ndarray | None,
) -> np.ndarray:
    """One block of a grid as an RGB image.

    queries: uint8 (q, S, S, 3); neighbours: uint8 (q, k, S, S, 3); same_class: bool
    (q, k); same_group: bool (q, k) or None (groups unknown). Row r: the query (grey
    border), a gap, then its k neighbours (green: same class, red: another; marked when
    from the query's group).
    """
    q, k, side = neighbours.shape[0], neighbours.shape[1], queries.shape[1]
    border = max(2, side // 16)
    cell = side + 2 * border
    gap = cell // 4
    out = np.full((q * cell, (k + 1) * cell + gap, 3), 255, np.uint8)
    for r in range(q):
        top = r * cell
        out[top : top + cell, :cell] = _framed(queries[r], QUERY_RGB, border)
        for j in range(k):
            framed = _framed(neighbours[r, j], SAME_RGB if same_class[r, j] else OTHER_RGB, border)
            if same_group is not None and same_group[r, j]:
                _mark_group(framed, border)
            left = (j + 1) * cell + gap
            out[top : top + cell, left : left + cell] = framed
    return out


@dataclass
class GridBlock:
    """One checkpoint's block: title and its mosaic (`neighbour_mosaic`)."""

    title: str
    mosaic: np.ndarray


def neighbours_figure(blocks: list[GridBlock], row_labels: list[str], k: int, title: str) -> Figure:
    """The blocks side by side (at most 4 a row of blocks), query classes down the left."""

    from matplotlib.figure import Figure

    cols = min(len(blocks), 4)
    rows = math.ceil(len(blocks) / cols)
    height, width = blocks[0].mosaic.shape[:2]
    cell = height / max(len(row_labels), 1)
    scale = 0.9 / cell  # inches per pixel: a cell of 0.9 inch
    fig = Figure(figsize=(cols * (width * scale + 0.6), rows * (height * scale + 0.5) + 0.5))
    for i, block in enumerate(blocks):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(block.mosaic, interpolation="nearest")
        ax.set_title(_text(block.title), fontsize=9)
        gap = (width - (k + 1) * cell) if k else 0
        ax.set_xticks([cell / 2] + [gap + (j + 1.5) * cell for j in range(k)])
        ax.set_xticklabels(["query"] + [str(j + 1) for j in range(k)], fontsize=7)
        ax.set_yticks([(r + 0.5) * cell for r in range(len(row_labels))])
        ax.set_yticklabels([_text(s) for s in row_labels] if i % cols == 0 else [], fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    _title(fig, title)
    return fig
