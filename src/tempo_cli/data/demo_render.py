"""Rendering of the demo "hand signs": pure functions from a nuisance state to an image.

Each of the 24 classes is a letter glyph (Pillow's scalable default font), drawn in a bright
random hue on a dark random hue with a few small clutter dots behind it. Everything that is
not the class (position, scale, rotation, colours, clutter) lives in a `SceneState` vector.

Why it looks like this (../shared/DEMO_NOTES.md): a bright sign on a dark scene stays
visible at 32 px; the scene must not carry time (no slowly drifting background); nuisance
must change quickly between frames so that temporal neighbours teach invariance to *all*
of it, not only to colour.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Glyphs are rendered once at this font size and then resampled by one affine transform
# per image; large enough that downscaling to 64 px stays smooth.
_GLYPH_FONT_SIZE = 96
_GLYPH_CANVAS = 160
# The sign is drawn at this multiple of the output size and box-reduced: an affine
# transform alone does not antialias when it shrinks the glyph.
_SUPERSAMPLE = 2

# Number of clutter dots per image; their parameters are part of the state vector.
N_CLUTTER = 2

# State vector layout (all entries in [0, 1] except where noted; hues are circular).
# 0 cx, 1 cy, 2 scale, 3 angle, 4-6 fg hsv, 7-9 bg hsv, then per dot: x, y, radius, h, s, v.
_DOT = 6
STATE_DIM = 10 + N_CLUTTER * _DOT
_HUE_INDICES = (4, 7, *(10 + k * _DOT + 3 for k in range(N_CLUTTER)))


@dataclass(frozen=True)
class Ranges:
    """Ranges of the fresh (independent) nuisance draws; fractions of the image size."""

    # Big signs: at 32 px a glyph 0.4-0.7 of the side gave a probe 0.20 vs 0.14 (random init)
    # after one epoch, 0.6-0.9 gave 0.44 vs 0.25.
    center: tuple[float, float] = (0.38, 0.62)
    height: tuple[float, float] = (0.6, 0.9)  # font size as a fraction of the image side
    angle_deg: tuple[float, float] = (-25.0, 25.0)
    fg_sat: tuple[float, float] = (0.45, 1.0)
    fg_val: tuple[float, float] = (0.8, 1.0)
    bg_sat: tuple[float, float] = (0.3, 1.0)
    bg_val: tuple[float, float] = (0.05, 0.3)
    dot_radius: tuple[float, float] = (0.04, 0.09)
    dot_sat: tuple[float, float] = (0.3, 1.0)
    dot_val: tuple[float, float] = (0.25, 0.7)


RANGES = Ranges()


def _bounds(ranges: Ranges) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of every state entry (hues and dot positions: [0, 1))."""
    unit = (0.0, 1.0)
    pairs = [ranges.center, ranges.center, ranges.height, ranges.angle_deg]
    pairs += [unit, ranges.fg_sat, ranges.fg_val, unit, ranges.bg_sat, ranges.bg_val]
    pairs += [unit, unit, ranges.dot_radius, unit, ranges.dot_sat, ranges.dot_val] * N_CLUTTER
    lo, hi = zip(*pairs, strict=True)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


_LO, _HI = _bounds(RANGES)


def fresh_state(rng: np.random.Generator) -> np.ndarray:
    """One independent draw of every nuisance parameter. Shape (STATE_DIM,), float64."""
    # One vectorised draw: per-entry Python calls dominated generation time.
    return rng.uniform(_LO, _HI)


def mix_states(prev: np.ndarray, new: np.ndarray, keep: float) -> np.ndarray:
    """`keep * prev + (1 - keep) * new`, with hues mixed the short way round the circle.

    Mixing in HSV (not RGB) keeps the sign bright and the scene dark: an RGB average of two
    saturated hues loses brightness, which is what made letters invisible in the prototype.
    """
    out = keep * prev + (1.0 - keep) * new
    for i in _HUE_INDICES:
        d = (new[i] - prev[i] + 0.5) % 1.0 - 0.5
        out[i] = (prev[i] + (1.0 - keep) * d) % 1.0
    return out


def chain_state(rng: np.random.Generator, steps: int, keep: float) -> np.ndarray:
    """A state from the video's stationary distribution: run the mixing chain `steps` times.

    Labelled images use this so that they come from the same distribution as video frames
    (a mixed state is narrower than a fresh one), yet each is independent of the video.
    """
    s = fresh_state(rng)
    for _ in range(steps):
        s = mix_states(s, fresh_state(rng), keep)
    return s


@cache
def _glyph(letter: str) -> Image.Image:
    """The letter as an 8-bit coverage mask, ink centred on a square canvas (cached)."""
    font = ImageFont.load_default(size=_GLYPH_FONT_SIZE)
    canvas = Image.new("L", (_GLYPH_CANVAS, _GLYPH_CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    # Centre the ink box (not the advance box) so every letter rotates about its middle.
    x = (_GLYPH_CANVAS - (right - left)) / 2 - left
    y = (_GLYPH_CANVAS - (bottom - top)) / 2 - top
    draw.text((x, y), letter, fill=255, font=font)
    return canvas


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def render(letter: str, state: np.ndarray, size: int) -> tuple[Image.Image, np.ndarray]:
    """Draw `letter` under nuisance `state` at `size` x `size`.

    Returns (RGB image, bool mask (size, size) of the sign's pixels). The mask is exact:
    clutter is drawn behind the sign, so no sign pixel is ever covered.
    """
    cx, cy, height, angle = state[0] * size, state[1] * size, state[2], state[3]
    img = Image.new("RGB", (size, size), _rgb(*state[7:10]))
    draw = ImageDraw.Draw(img)
    for k in range(N_CLUTTER):
        x, y, r, h, s, v = state[10 + k * _DOT : 10 + (k + 1) * _DOT]
        x, y, r = x * size, y * size, max(r * size, 1.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgb(h, s, v))

    # Affine map output pixel -> glyph canvas pixel: undo translation, rotation and scale.
    big = size * _SUPERSAMPLE
    cx, cy = cx * _SUPERSAMPLE, cy * _SUPERSAMPLE
    zoom = _GLYPH_FONT_SIZE / (height * big)  # glyph pixels per (supersampled) output pixel
    t = math.radians(angle)
    c, s_ = math.cos(t) * zoom, math.sin(t) * zoom
    g = _GLYPH_CANVAS / 2
    coeffs = (c, s_, g - c * cx - s_ * cy, -s_, c, g + s_ * cx - c * cy)
    alpha = (
        _glyph(letter)
        .transform((big, big), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
        .reduce(_SUPERSAMPLE)
    )
    fg = Image.new("RGB", (size, size), _rgb(*state[4:7]))
    img = Image.composite(fg, img, alpha)
    mask = np.asarray(alpha) >= 128
    return img, mask
