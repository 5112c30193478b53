"""ColorJitter on a whole batch, each image with its own factors and its own op order.

torchvision's functional colour ops take one factor for a whole tensor, so the per-image
draws of `--augment strong` used to loop over the images (several times slower on a CPU,
`benchmarks/colour_jitter.py`; one tiny kernel launch per image and op on a GPU). Here every
op runs once per batch
with a (B,) factor tensor, in the same float32 arithmetic as torchvision's kernels
(`torchvision.transforms.v2.functional._color`): the result equals the per-image calls
bit for bit (tests/test_pretrain_augment.py checks it against `F.adjust_*`), so runs
augmented before and after this module agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as F

# torchvision's own RGB <-> HSV conversions (private, hence checked by the equality test):
# a copy would drift from the kernels that the per-image path ran.
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv


def _per_image(f: torch.Tensor) -> torch.Tensor:
    """float64 (B,) factors -> float32 (B, 1, 1, 1), rounded as torchvision rounds a float."""
    return f.to(torch.float32).view(-1, 1, 1, 1)


def _blend(img1: torch.Tensor, img2: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend` (img1 * r + img2 * (1 - r), clamped) with per-image r (B,)."""
    return img1.mul(_per_image(ratio)).addcmul_(img2, _per_image(1.0 - ratio)).clamp_(0.0, 1.0)


def _gray(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, as torchvision's colour ops compute it."""
    return F.rgb_to_grayscale(img, num_output_channels=1)


def brightness(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return img.mul(_per_image(f)).clamp_(0.0, 1.0)


def contrast(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(img, _gray(img).mean(dim=(-3, -2, -1), keepdim=True), f)


def saturation(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(img, _gray(img), f)


def hue(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    h, s, v = _rgb_to_hsv(img).unbind(dim=-3)
    h = h.add_(f.to(torch.float32).view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


#: ColorJitter's four ops, in the column order of `ViewParams.factors`.
OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    brightness,
    contrast,
    saturation,
    hue,
)


def jitter_batch(img: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """float (B, 3, S, S) in [0, 1] -> jittered, same shape.

    factors: float64 (B, 4) brightness, contrast, saturation, hue; order: int64 (B, 4), the
    ops of each image in the order it applies them (0-3 as in `factors`). At each of the 4
    positions every op runs once, on the images that apply it there.
    """
    factors = factors.to(img.device)
    order = order.cpu()  # which images apply which op: decided on the host, no device sync
    out = img
    for k in range(len(OPS)):
        step = out.clone()
        for j, op in enumerate(OPS):
            rows = (order[:, k] == j).nonzero().squeeze(1)
            if len(rows):
                rows = rows.to(img.device)
                step[rows] = op(out[rows], factors[rows, j])
        out = step
    return out
