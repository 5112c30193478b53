"""`CocoInstances`: a validated COCO split (`data.coco`) as Mask R-CNN `(image, target)` pairs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tempo_cli.data.coco import CocoSplit, decode_segmentation
from tempo_cli.errors import TempoError


class CocoInstances(torch.utils.data.Dataset):
    """`(image, target)` pairs for torchvision's Mask R-CNN.

    image: float32 (3, H, W) in [0, 1] (RGB; the model's transform normalises).
    target: boxes float32 (N, 4) xyxy, labels int64 (N,) in 1..C, masks uint8 (N, H, W),
    image_id int. Crowd annotations and degenerate boxes are left out (as detectron2
    does in training). Decoded images are kept in memory (`cache=True`) because the
    loop visits them many times.
    """

    def __init__(self, split: CocoSplit, image_ids: list[int] | None = None, cache: bool = True):
        self.split = split
        self.image_ids = list(split.image_ids if image_ids is None else image_ids)
        self.label_of = {c: k + 1 for k, c in enumerate(split.category_ids)}
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_uint8(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(uint8 image (3, H, W), target) for position `index`."""
        image_id = self.image_ids[index]
        if image_id in self._cache:
            return self._cache[image_id]
        path = self.split.image_path(image_id)
        try:
            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise TempoError(f"{path}: not a readable image ({e})") from None
        info = self.split.image_info(image_id)
        h, w = arr.shape[:2]
        if (h, w) != (int(info["height"]), int(info["width"])):
            raise TempoError(
                f"{path} is {w}x{h} but {self.split.json_path.name} says "
                f"{info['width']}x{info['height']}"
            )
        boxes, labels, masks = [], [], []
        for ann in self.split.annotations_by_image.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            if bw <= 1e-3 or bh <= 1e-3:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.label_of[int(ann["category_id"])])
            masks.append(decode_segmentation(ann["segmentation"], h, w))
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, h, w), dtype=torch.uint8),
            "image_id": torch.tensor(image_id),
        }
        image = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        if self.cache:
            self._cache[image_id] = (image, target)
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.load_uint8(index)
        return image.float().div_(255), dict(target)

    def annotated_indices(self) -> list[int]:
        """Positions of images with at least one usable (non-crowd) instance."""
        out = []
        for i, image_id in enumerate(self.image_ids):
            anns = self.split.annotations_by_image.get(image_id, [])
            if any(
                not a.get("iscrowd", 0) and a["bbox"][2] > 1e-3 and a["bbox"][3] > 1e-3
                for a in anns
            ):
                out.append(i)
        return out
