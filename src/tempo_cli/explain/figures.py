"""Figures of the explain commands: heatmap PNGs, contact sheets, the noise figure, plots.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend) and written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from tempo_cli import atomic

#: the default heatmap colours (`--cmap`): the study's zennit map, see explain/colours.py
DEFAULT_CMAP = "reference"
#: the screen a contact sheet is laid out to fit (px)
SCREEN = (1920, 1080)


def heatmap_rgb(heatmap: torch.Tensor | np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """(H, W) signed relevance -> uint8 (H, W, 3) in the colour map `cmap` (`CMAPS`)."""
    from tempo_cli.explain.colours import CMAPS

    return CMAPS[cmap].rgb(np.asarray(heatmap, dtype=np.float64))


def save_heatmap_png(
    path: Path, heatmap: torch.Tensor | np.ndarray, cmap: str = DEFAULT_CMAP
) -> Path:
    """Write one heatmap as an RGB PNG of the heatmap's own size (atomic)."""
    image = Image.fromarray(heatmap_rgb(heatmap, cmap), mode="RGB")
    with atomic.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Save a Figure as PNG (atomic)."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return path


def level_title(level: float) -> str:
    """`0.0`, `0.1`, `0.031`: at least one decimal, as the study's "Noise level: 0.0"."""
    text = f"{level:g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


def _image(x: torch.Tensor) -> np.ndarray:
    """[0, 1] float (3, H, W) -> (H, W, 3) for imshow."""
    return x.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


_PAD, _GAP, _CAP, _TITLE = 4, 12, 14, 20  # px: between cells, between items, caption, title


def sheet_layout(
    n: int, per_item: int, largest: int, screen: tuple[int, int] = SCREEN
) -> tuple[int, int]:
    """(items per row, cell side in px) of a contact sheet that fits `screen`.

    An item is `per_item` cells side by side (the photo, then each model's heatmap). Of
    the layouts whose cells are as large as possible (at most `largest`, at least 32 px,
    under which the sheet may outgrow the screen), the one closest to the screen's shape.
    """
    best: tuple[int, float, int] | None = None
    for cols in range(1, max(n, 1) + 1):
        rows = -(-max(n, 1) // cols)
        fit_w = ((screen[0] - _PAD) / cols - _GAP) / per_item - _PAD
        fit_h = (screen[1] - _TITLE - _PAD) / rows - _CAP - _PAD
        cell = max(32, min(largest, int(fit_w), int(fit_h)))
        w, h = _sheet_size(cols, rows, per_item, cell)
        shape = abs(np.log((w / h) / (screen[0] / screen[1])))
        key = (-cell, shape, cols)
        if best is None or key < best:
            best = key
    assert best is not None
    return best[2], -best[0]


def _sheet_size(cols: int, rows: int, per_item: int, cell: int) -> tuple[int, int]:
    return (
        _PAD + cols * (per_item * (cell + _PAD) + _GAP),
        _TITLE + rows * (cell + _CAP + _PAD) + _PAD,
    )


def _tile(cell: np.ndarray, side: int) -> Image.Image:
    """uint8 (H, W, 3) -> side x side: NEAREST when enlarging (pixels stay visible), BOX
    (area averaging) when shrinking."""
    image = Image.fromarray(cell, mode="RGB")
    grow = side >= max(cell.shape[:2])
    mode = Image.Resampling.NEAREST if grow else Image.Resampling.BOX
    return image.resize((side, side), mode)


def contact_sheet(
    title: str,
    pixels: torch.Tensor,
    maps: Sequence[torch.Tensor],
    model_names: Sequence[str],
    predictions: Sequence[Sequence[str]],
    cmap: str = DEFAULT_CMAP,
    captions: Sequence[str] | None = None,
) -> Image.Image:
    """Images with each model's heatmap beside them, laid out as a grid that fits a screen.

    Composed with PIL (a sheet per class in milliseconds, not a matplotlib figure each).
    An item = the photo, then each model's heatmap, captioned with model and prediction;
    items fill the rows of a grid sized by `sheet_layout` (cells up to 128 px or the
    image's size, NEAREST upscaling).

    Args:
        pixels: [0, 1] images (n, 3, H, W).
        maps: per model, heatmaps (n, H, W).
        predictions: per model, the predicted class name of each image.
        captions: per image, the photo's caption (absent: "image").
    """
    from PIL import ImageDraw

    n, h, w = pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    per_item = 1 + len(maps)
    side = max(h, w)
    cols, cell = sheet_layout(n, per_item, side * max(1, -(-128 // side)))
    rows = -(-n // cols) if n else 0
    sheet = Image.new("RGB", _sheet_size(cols, max(rows, 1), per_item, cell), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 4), title, fill=(0, 0, 0))
    for i in range(n):
        x0 = _PAD + (i % cols) * (per_item * (cell + _PAD) + _GAP)
        y = _TITLE + (i // cols) * (cell + _CAP + _PAD)
        photo = (_image(pixels[i]) * 255.0 + 0.5).astype(np.uint8)
        cells = [photo] + [heatmap_rgb(m[i], cmap) for m in maps]
        texts = [captions[i] if captions else "image"]
        texts += [f"{model_names[k]}: {predictions[k][i]}" for k in range(len(maps))]
        for c, (image, text) in enumerate(zip(cells, texts, strict=True)):
            x = x0 + c * (cell + _PAD)
            sheet.paste(_tile(image, cell), (x, y + _CAP))
            draw.text((x, y + 1), text[: max(4, cell // 6)], fill=(0, 0, 0))
    return sheet


def save_image(image: Image.Image, path: Path) -> Path:
    """Save a PIL image as PNG (atomic)."""
    with atomic.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def level_figure(
    levels: Sequence[float],
    images: Sequence[torch.Tensor],
    maps: Sequence[Sequence[torch.Tensor]],
    predictions: Sequence[Sequence[str]],
    model_names: Sequence[str],
    label: str = "Noise level",
    per_model_images: bool = False,
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """The study's noise figure for one image.

    Noise: row 1 the noisy images titled "Noise level: x" (`label`); then per model a row
    of its LRP heatmaps titled "Prediction: <LETTER>". Gradient attacks perturb each
    model's input differently (`per_model_images`), so each model gets its own row of
    attacked images above its heatmaps.

    Args:
        images: one entry (L, 3, H, W), or one per model with `per_model_images`.
        maps: per model, heatmaps (L, H, W).
        predictions: per model, L predicted class names.
    """
    cols = len(levels)
    rows = len(maps) * (2 if per_model_images else 1) + (0 if per_model_images else 1)
    fig = Figure(figsize=(2.0 * cols, 2.15 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    r = 0
    for m in range(len(maps)):
        if m == 0 or per_model_images:
            imgs = images[m if per_model_images else 0]
            for c, level in enumerate(levels):
                axes[r][c].imshow(_image(imgs[c]))
                axes[r][c].set_title(f"{label}: {level_title(level)}", fontsize=8)
                _off(axes[r][c])
            if per_model_images:
                axes[r][0].set_ylabel(model_names[m], fontsize=8)
            r += 1
        for c in range(cols):
            axes[r][c].imshow(heatmap_rgb(maps[m][c], cmap))
            axes[r][c].set_title(f"Prediction: {predictions[m][c]}", fontsize=8)
            _off(axes[r][c])
        axes[r][0].set_ylabel(model_names[m], fontsize=8)
        r += 1
    fig.tight_layout()
    return fig


def accuracy_plot(
    levels: Sequence[float], accuracy: dict[str, Sequence[float]], xlabel: str, title: str
) -> Figure:
    """Accuracy (y, 0-1) against noise level / epsilon (x), one line per model."""
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.subplots()
    for name, acc in accuracy.items():
        ax.plot(list(levels), list(acc), marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def rr_histogram(values: dict[str, np.ndarray], title: str) -> Figure:
    """Overlaid histograms of relative relevance per model."""
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.subplots()
    finite = [v[np.isfinite(v)] for v in values.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    bins = np.linspace(float(allv.min()), float(allv.max()), 25) if allv.size else 10
    if allv.size and allv.min() == allv.max():
        bins = 10
    for name, fv in zip(values, finite, strict=True):
        ax.hist(fv, bins=bins, alpha=0.55, label=f"{name} (mean {np.mean(fv):.3f})")
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("relative relevance mean(R*M) / mean(R)")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
