"""What each Mask R-CNN iteration trains on: the datasets and a resumable batch order.

Data order and flips depend only on (seed, iteration), so a resumed run sees the same
batches as an uninterrupted one without saving any sampler state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tempo_cli.data.coco import CocoSplit
from tempo_cli.data.coco_instances import CocoInstances
from tempo_cli.errors import TempoError


@dataclass
class SegmentData:
    """Validated train/test splits and the datasets the loop draws from."""

    root: Path
    train_split: CocoSplit
    test_split: CocoSplit
    train: CocoInstances  # annotated training images only (detectron2 filters empty ones)
    test: CocoInstances  # the evaluated test images (all, or the first --eval-images)


def make_data(
    root: Path,
    train_split: CocoSplit,
    test_split: CocoSplit,
    train_images: int | None,
    eval_images: int | None,
) -> SegmentData:
    """Datasets for the loop; TempoError if no training image has a usable instance."""
    full = CocoInstances(train_split)
    keep = full.annotated_indices()
    if not keep:
        raise TempoError(
            f"{train_split.json_path}: no training image has a usable (non-crowd, non-empty) "
            "instance"
        )
    ids = [full.image_ids[i] for i in keep]
    if train_images is not None:
        ids = ids[:train_images]
    test_ids = test_split.image_ids[:eval_images] if eval_images else test_split.image_ids
    return SegmentData(
        root=root,
        train_split=train_split,
        test_split=test_split,
        train=CocoInstances(train_split, ids),
        test=CocoInstances(test_split, test_ids),
    )


class BatchSchedule:
    """Which training images (and flips) iteration `it` uses; a function of (seed, it).

    The images are taken in consecutive slices of one random permutation per pass over
    the data (like detectron2's TrainingSampler), so each image is seen once per pass.
    """

    def __init__(self, n: int, batch_size: int, seed: int, flip: bool) -> None:
        self.n, self.batch_size, self.seed, self.flip = n, batch_size, seed, flip
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def indices(self, it: int) -> list[int]:
        out = []
        for p in range(it * self.batch_size, (it + 1) * self.batch_size):
            out.append(int(self._perm(p // self.n)[p % self.n]))
        return out

    def flips(self, it: int) -> list[bool]:
        if not self.flip:
            return [False] * self.batch_size
        g = torch.Generator().manual_seed(self.seed * 7_919 + it + 1)
        return [bool(b) for b in torch.rand(self.batch_size, generator=g) < 0.5]


def _hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Horizontal flip of an image (3, H, W), its boxes (N, 4) xyxy and masks (N, H, W)."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def make_batch(
    data: CocoInstances, schedule: BatchSchedule, it: int, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = [], []
    for i, flip in zip(schedule.indices(it), schedule.flips(it), strict=True):
        image, target = data[i]
        if flip:
            image, target = _hflip(image, target)
        images.append(image.to(device))
        targets.append({k: v.to(device) for k, v in target.items()})
    return images, targets
