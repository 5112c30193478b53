"""Augmentation of the two views of a pair (`tempo pretrain --augment none|light|strong`).

A recipe (`AUGMENTS`) holds one `ViewRecipe` per view: `none` has none (the batches go to
the model as they are, the reference), `light` is a random resized crop + horizontal flip,
`strong` is the Barlow Twins paper's recipe (Zbontar et al. 2021, their augmentations.py):
crop (scale 0.08-1), flip p=0.5, colour jitter (brightness 0.4, contrast 0.4, saturation
0.2, hue 0.1, in random order) p=0.8, grayscale p=0.2, Gaussian blur p=1.0 / 0.1, sigma in
[0.1, 2], solarisation p=0.0 / 0.2 (view 1 / view 2: the paper's asymmetry).

The paper's blur is in pixels of its 224-px crops; here sigma and kernel scale with the
frame side (sigma x side / 224, kernel ~10% of the side), so the recipe blurs a 32-px frame
as much, relative to its size, as the paper blurs a 224-px one (an unscaled sigma of 2 px
would wipe out a 32-px letter). `--crop-scale` sets the smallest crop (the paper's 0.08).

Parameters are drawn per image and per view on a CPU `torch.Generator` that
`step_generator` seeds from (seed, epoch, batch, rank): the global RNG is never touched, a
resumed run draws the same augmentations, and every rank draws its own. The ops run on the
batch's device with torchvision.transforms.v2.functional; masks (flip, grayscale,
solarise) apply to the whole batch at once, colour jitter runs batched with each image's
own factors and order (pretrain.colour_jitter, equal to the per-image ops bit for bit), and
crop and blur (cheap at these sizes) loop over the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from tempo_cli.pretrain.colour_jitter import jitter_batch

#: Mixed into the seed so augmentation draws never share a stream with pair sampling.
_STREAM = 0x617567  # "aug"
_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect ratios
_CROP_TRIES = 10  # as torchvision's RandomResizedCrop, then the whole image
#: The side of the paper's crops: the blur sigma range is given at this size.
PAPER_SIDE = 224
#: The Barlow Twins paper's smallest crop (8% of the area): `--crop-scale`'s default.
PAPER_CROP_SCALE = 0.08


@dataclass(frozen=True)
class ViewRecipe:
    """How one view is augmented; a probability of 0 skips that op. The crop's area range
    is the run's (`--crop-scale`), not the recipe's."""

    flip_p: float = 0.5
    jitter_p: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


@dataclass(frozen=True)
class Augment:
    """A named recipe: `views` = (view 1, view 2), or None for no augmentation at all."""

    name: str
    views: tuple[ViewRecipe, ViewRecipe] | None


_LIGHT = ViewRecipe()
_STRONG_1 = ViewRecipe(jitter_p=0.8, gray_p=0.2, blur_p=1.0, solarize_p=0.0)
_STRONG_2 = ViewRecipe(jitter_p=0.8, gray_p=0.2, blur_p=0.1, solarize_p=0.2)

#: `--augment` name -> recipe (the settings' Literal lists the same names).
AUGMENTS: dict[str, Augment] = {
    "none": Augment("none", None),
    "light": Augment("light", (_LIGHT, _LIGHT)),
    "strong": Augment("strong", (_STRONG_1, _STRONG_2)),
}


@dataclass
class ViewParams:
    """One view's draws for a batch of B images (all on the CPU).

    boxes: int64 (B, 4) crop top, left, height, width; flip, jitter, gray, blur, solarize:
    bool (B,); factors: float64 (B, 4) brightness, contrast, saturation, hue; order: int64
    (B, 4) the jitter ops' order (0-3 as in `factors`); sigma: float64 (B,) blur sigma.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor


def step_generator(seed: int, epoch: int, batch: int, rank: int) -> torch.Generator:
    """A CPU generator for one step's draws, a pure function of (seed, epoch, batch, rank)."""
    words = [seed % 2**64, epoch % 2**64, batch % 2**64, rank % 2**64, _STREAM]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _bernoulli(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) < p


def crop_boxes(n: int, side: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes of n square side x side images -> int64 (n, 4) (t, l, h, w).

    torchvision's rule, vectorised: up to 10 tries of an area fraction in `scale` and a
    log-uniform aspect ratio in [3/4, 4/3]; the first box that fits is taken, else the
    whole image (for a square image, the whole image is also the central fallback).
    """
    area = side * side * _uniform(n * _CROP_TRIES, *scale, g).view(n, _CROP_TRIES)
    log_r = _uniform(n * _CROP_TRIES, math.log(_RATIO[0]), math.log(_RATIO[1]), g)
    ratio = log_r.exp().view(n, _CROP_TRIES)
    w = (area * ratio).sqrt().round().long()
    h = (area / ratio).sqrt().round().long()
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    first = torch.where(fits.any(1), fits.long().argmax(1), -1)
    rows = torch.arange(n)
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], side)
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], side)
    top = (torch.rand(n, generator=g, dtype=torch.float64) * (side - h + 1)).long()
    left = (torch.rand(n, generator=g, dtype=torch.float64) * (side - w + 1)).long()
    return torch.stack([top, left, h, w], 1)


def draw_view(
    recipe: ViewRecipe,
    n: int,
    side: int,
    g: torch.Generator,
    crop_scale: float = PAPER_CROP_SCALE,
) -> ViewParams:
    """Draw one view's parameters for n images of side x side pixels, each its own; crops
    of `crop_scale` to all of the image's area."""
    b, c, s, h = recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue
    factors = torch.stack(
        [
            _uniform(n, 1 - b, 1 + b, g),
            _uniform(n, 1 - c, 1 + c, g),
            _uniform(n, 1 - s, 1 + s, g),
            _uniform(n, -h, h, g),
        ],
        1,
    )
    return ViewParams(
        boxes=crop_boxes(n, side, (crop_scale, 1.0), g),
        flip=_bernoulli(n, recipe.flip_p, g),
        jitter=_bernoulli(n, recipe.jitter_p, g),
        factors=factors,
        order=torch.argsort(torch.rand(n, 4, generator=g), dim=1),
        gray=_bernoulli(n, recipe.gray_p, g),
        blur=_bernoulli(n, recipe.blur_p, g),
        sigma=_uniform(n, *recipe.blur_sigma, g) * (side / PAPER_SIDE),
        solarize=_bernoulli(n, recipe.solarize_p, g),
    )


def blur_kernel(side: int) -> int:
    """Gaussian blur kernel size: about 10% of the image side, odd, at least 3."""
    return max(3, int(round(0.1 * side)) // 2 * 2 + 1)


def _masked(mask: torch.Tensor, changed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """changed where mask (B,) is set, else x: (B, 3, S, S)."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), changed, x)


def apply_view(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """float (B, 3, S, S) pixels in [0, 1] -> one augmented view, same shape and device."""
    side = x.shape[-1]
    out = torch.stack(
        [
            F.resized_crop(img, *box.tolist(), size=[side, side], antialias=True)
            for img, box in zip(x, p.boxes, strict=True)
        ]
    ).clamp_(0.0, 1.0)  # bilinear resampling may overshoot a little
    out = _masked(p.flip, F.horizontal_flip(out), out)
    if p.jitter.any():
        rows = p.jitter.nonzero().squeeze(1).to(out.device)
        out[rows] = jitter_batch(out[rows], p.factors[p.jitter], p.order[p.jitter])
    if p.gray.any():
        out = _masked(p.gray, F.rgb_to_grayscale(out, num_output_channels=3), out)
    if p.blur.any():
        k = blur_kernel(side)
        out = torch.stack(
            [
                F.gaussian_blur(img, [k, k], [float(p.sigma[i])] * 2) if p.blur[i] else img
                for i, img in enumerate(out)
            ]
        )
    if p.solarize.any():
        out = _masked(p.solarize, F.solarize(out, threshold=0.5), out)
    return out.clamp_(0.0, 1.0)  # jitter and blur round a hair outside [0, 1]


class PairAugmenter:
    """`(x_a, x_b, epoch, batch) -> (view_a, view_b)`: uint8 (B, 3, S, S) on the training
    device -> float (B, 3, S, S) in [0, 1], each image and each view drawn independently."""

    def __init__(
        self, augment: Augment, seed: int, rank: int = 0, crop_scale: float = PAPER_CROP_SCALE
    ) -> None:
        """crop_scale: the smallest crop area fraction (`--crop-scale`)."""
        if augment.views is None:
            raise ValueError("augment 'none' has no views; feed the batches unchanged")
        self.views = augment.views
        self.seed = seed
        self.rank = rank
        self.crop_scale = crop_scale

    def draw(self, n: int, side: int, epoch: int, batch: int) -> tuple[ViewParams, ViewParams]:
        """Both views' parameters of step (epoch, batch) for n images."""
        g = step_generator(self.seed, epoch, batch, self.rank)
        view_a = draw_view(self.views[0], n, side, g, self.crop_scale)
        return view_a, draw_view(self.views[1], n, side, g, self.crop_scale)

    def __call__(
        self, x_a: torch.Tensor, x_b: torch.Tensor, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p_a, p_b = self.draw(len(x_a), int(x_a.shape[-1]), epoch, batch)
        return apply_view(x_a.float().div_(255.0), p_a), apply_view(x_b.float().div_(255.0), p_b)
