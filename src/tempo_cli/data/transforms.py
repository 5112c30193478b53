"""Pre-processing shared by pre-training and evaluation (SPEC.md "Pre-processing").

Images are stored as uint8 at training resolution and normalised on the fly, so a cache
holds 1 byte per value instead of 4 and batching is a plain index into one tensor.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transform(image_size: int | None) -> T.Compose:
    """The reference transform: `Resize(image_size)` (shorter side), `ToTensor`, `Normalize`.

    `image_size=None` skips the resize (the reference ResNet-50 runs at 256x256).
    PIL image -> float32 (3, H, W).
    """
    steps: list = [] if image_size is None else [T.Resize(image_size)]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def to_uint8_tensor(image: Image.Image, size: int | None) -> torch.Tensor:
    """PIL RGB image -> uint8 (3, S, S): shorter side resized to `size`, then center-cropped.

    On square frames this is exactly the reference's `Resize(size)` (PIL bilinear with
    antialias), and `x / 255` is exactly its `ToTensor`. The crop only matters for
    non-square inputs (e.g. 16:9 video) and makes every frame the same square shape so
    sequences stack into one tensor. `size=None` keeps the image as it is.
    """
    if size is not None:
        image = F.resize(image, size)  # shorter side -> size, as T.Resize(size)
        if image.size != (size, size):
            image = F.center_crop(image, [size, size])
    return F.pil_to_tensor(image)


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or (3, H, W) -> float32 of the same shape, ImageNet-normalised.

    Equals `Normalize(mean, std)(ToTensor(img))` of the reference. Runs on x's device, so
    call it after moving the uint8 batch to the GPU (4x less host-to-device traffic).
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x.float().div_(255.0) - mean) / std
