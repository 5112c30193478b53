"""COCO bbox and segm AP of a Mask R-CNN with pycocotools, and the training-time figure.

AP values are pycocotools' `stats` (fractions in [0, 1]; detectron2 prints them x100).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tempo_cli.data.coco import CocoSplit
from tempo_cli.data.coco_instances import CocoInstances

# pycocotools' stats[0..2]: AP@[.5:.95], AP@.5, AP@.75.
_STATS = {"AP": 0, "AP50": 1, "AP75": 2}


@dataclass
class Evaluation:
    """The figures of one evaluation and the raw predictions of its first images."""

    metrics: dict[str, float | None]
    detections: int
    predictions: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)


def _to_results(
    output: dict[str, torch.Tensor], image_id: int, category_ids: list[int]
) -> list[dict[str, Any]]:
    """One image's detections as COCO result dicts (bbox xywh, RLE mask, original ids)."""
    from pycocotools import mask as mask_utils

    boxes = output["boxes"].cpu()
    if len(boxes) == 0:
        return []
    scores = output["scores"].cpu().tolist()
    labels = output["labels"].cpu().tolist()
    masks = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)  # (N, H, W)
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    results = []
    for k in range(len(scores)):
        rle = rles[k]
        rle["counts"] = rle["counts"].decode("ascii")
        results.append(
            {
                "image_id": image_id,
                "category_id": category_ids[labels[k] - 1],
                "bbox": [round(float(v), 3) for v in xywh[k]],
                "score": float(scores[k]),
                "segmentation": rle,
            }
        )
    return results


def coco_ap(split: CocoSplit, image_ids: list[int], results: list[dict[str, Any]]) -> dict:
    """{bbox_AP, bbox_AP50, bbox_AP75, segm_AP, ...} for `results` on `image_ids` of `split`.

    No detections at all -> every AP is 0.0; an AP pycocotools cannot define (no ground
    truth in the evaluated images) -> None.
    """
    keys = [f"{t}_{s}" for t in ("bbox", "segm") for s in _STATS]
    if not results:
        return dict.fromkeys(keys, 0.0)
    from pycocotools.cocoeval import COCOeval

    gt = split.pycocotools()
    out: dict[str, float | None] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, idx in _STATS.items():
                v = float(ev.stats[idx])
                out[f"{iou_type}_{name}"] = None if v < 0 else v
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: CocoInstances,
    device: torch.device,
    score_thresh: float,
    batch_size: int = 4,
    keep_predictions: int = 0,
) -> Evaluation:
    """Run `model` over `dataset` at `score_thresh` and score it with pycocotools.

    The model is put in eval mode and back into train mode afterwards. Predictions are
    in the original image coordinates (torchvision's postprocess undoes the resize).
    """
    was_training = model.training
    old_thresh = model.roi_heads.score_thresh
    model.eval()
    model.roi_heads.score_thresh = score_thresh
    category_ids = dataset.split.category_ids
    results: list[dict[str, Any]] = []
    kept: list[dict[str, torch.Tensor]] = []
    try:
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            images = [dataset[i][0].to(device) for i in idx]
            outputs = model(images)
            for i, out in zip(idx, outputs, strict=True):
                image_id = dataset.image_ids[i]
                results.extend(_to_results(out, image_id, category_ids))
                if len(kept) < keep_predictions:
                    kept.append({k: v.cpu() for k, v in out.items()})
    finally:
        model.roi_heads.score_thresh = old_thresh
        model.train(was_training)
    metrics = coco_ap(dataset.split, dataset.image_ids, results)
    return Evaluation(metrics=metrics, detections=len(results), predictions=kept)


def iterations_to_fraction(
    evals: list[dict[str, Any]], fraction: float = 0.9, key: str = "segm_AP"
) -> int | None:
    """The first evaluated iteration whose `key` reaches `fraction` of the last one's.

    The study's training-time figure (`iterations_to_90pct_final_segm_AP`). None when
    there are no evaluations or the final AP is 0 / undefined.
    """
    if not evals:
        return None
    final = evals[-1].get(key)
    if final is None or final <= 0:
        return None
    for e in evals:
        v = e.get(key)
        if v is not None and v >= fraction * final:
            return int(e["iteration"])
    return int(evals[-1]["iteration"])
