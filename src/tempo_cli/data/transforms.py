"""Pre-processing shared by pre-training, evaluation and explanations (SPEC.md "Pre-processing").

Images are stored as uint8 at training resolution and normalised on the fly, so a cache
holds 1 byte per value instead of 4 and batching is a plain index into one tensor.
Training and evaluation resize with bilinear interpolation (the reference's `Resize`);
the explanation pipeline resizes with NEAREST, as the study's LRP code did.
"""

from __future__ import annotations

import functools

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BILINEAR = InterpolationMode.BILINEAR
NEAREST = InterpolationMode.NEAREST


def image_transform(image_size: int | None) -> T.Compose:
    """The reference transform: `Resize(image_size)` (shorter side), `ToTensor`, `Normalize`.

    `image_size=None` skips the resize (the reference ResNet-50 runs at 256x256).
    PIL image -> float32 (3, H, W).
    """
    steps: list = [] if image_size is None else [T.Resize(image_size)]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def resize_crop(
    image: Image.Image, size: int | None, interpolation: InterpolationMode = BILINEAR
) -> Image.Image:
    """PIL image -> PIL image of S x S: shorter side resized to `size`, then center-cropped.

    On square images this is exactly the reference's `Resize(size, interpolation)` (PIL,
    bilinear with antialias by default). The crop only matters for non-square inputs (e.g.
    16:9 video) and makes every image the same square shape so a folder stacks into one
    tensor. `size=None` keeps the image as it is.
    """
    if size is not None:
        image = F.resize(image, size, interpolation=interpolation)  # as T.Resize(size)
        if image.size != (size, size):
            image = F.center_crop(image, [size, size])
    return image


def to_uint8_tensor(
    image: Image.Image, size: int | None, interpolation: InterpolationMode = BILINEAR
) -> torch.Tensor:
    """PIL RGB image -> uint8 (3, S, S) (`resize_crop`); `x / 255` is the reference's ToTensor."""
    return F.pil_to_tensor(resize_crop(image, size, interpolation))


@functools.lru_cache(maxsize=16)
def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """mean, std as (3, 1, 1) on `device`: made once, not a host-to-device copy per batch."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=device).view(3, 1, 1)
    return mean, std


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Pixels (..., 3, H, W) -> float of the same shape, ImageNet-normalised.

    uint8 input is divided by 255 first (the reference's ToTensor), so the result equals
    `Normalize(mean, std)(ToTensor(img))`; float input is taken as [0, 1] pixels, keeps its
    dtype and stays differentiable (the attacks perturb pixels and normalise inside the
    model). Runs on x's device: move a uint8 batch to the GPU first (4x less traffic).
    """
    if x.dtype == torch.uint8:
        mean, std = _imagenet_stats(x.device, torch.float32)
        # A fresh float copy is ours: normalise it in place (one buffer per batch).
        return x.float().div_(255.0).sub_(mean).div_(std)
    mean, std = _imagenet_stats(x.device, x.dtype)
    return (x - mean) / std


# The name evaluation and pre-training have used; the same function.
normalize_uint8 = normalize
