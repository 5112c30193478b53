"""Figures of `tempo segment`: AP against iterations, the backbone comparison, and
predicted masks drawn over test images. Each function returns a matplotlib Figure
(saved by `RunDir.save_figure`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def ap_figure(evals: list[dict[str, Any]], title: str = "") -> Figure:
    """bbox and segm AP (0-1) against training iterations."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    its = [e["iteration"] for e in evals]
    for key, label in (("bbox_AP", "bbox AP"), ("segm_AP", "segm AP")):
        ax.plot(its, [e.get(key) or 0.0 for e in evals], marker="o", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP (COCO, 0-1)")
    ax.set_title(title or "Mask R-CNN: AP during training")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def comparison_figure(runs: list[dict[str, Any]], key: str = "segm_AP") -> Figure:
    """One line per backbone: `key` against iterations (the study's training-time plot).

    runs: [{"label": str, "evals": [{iteration, segm_AP, ...}], ...}].
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        evals = run["evals"]
        ax.plot(
            [e["iteration"] for e in evals],
            [e.get(key) or 0.0 for e in evals],
            marker="o",
            label=run["label"],
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{key.replace('_', ' ')} (COCO, 0-1)")
    ax.set_title("Mask R-CNN: segm AP by backbone (same schedule)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def predictions_figure(
    images: list[torch.Tensor],
    predictions: list[dict[str, torch.Tensor]],
    class_names: list[str],
    score_thresh: float,
) -> Figure:
    """Predicted masks and boxes over test images.

    images: float (3, H, W) in [0, 1]; predictions: torchvision outputs at original size.
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    plt = _pyplot()
    n = max(1, len(images))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, pred) in enumerate(zip(images, predictions, strict=False)):
        canvas = (image.clamp(0, 1) * 255).to(torch.uint8)
        keep = pred["scores"] >= score_thresh
        masks = pred["masks"][keep, 0] > 0.5
        boxes = pred["boxes"][keep]
        labels = [
            f"{class_names[int(lab) - 1]} {float(s):.2f}"
            for lab, s in zip(pred["labels"][keep], pred["scores"][keep], strict=True)
        ]
        if len(masks):
            canvas = draw_segmentation_masks(canvas, masks, alpha=0.5)
            canvas = draw_bounding_boxes(canvas, boxes, labels=labels, colors="yellow")
        ax = axes.flat[k]
        ax.imshow(canvas.permute(1, 2, 0).numpy())
        ax.set_title(", ".join(labels[:2]) if labels else "no detection", fontsize=8)
    fig.suptitle(f"predicted masks (score >= {score_thresh:g})")
    fig.tight_layout()
    return fig
