"""Heatmaps: zennit LRP (SPEC.md) and, for comparison, captum attributions.

LRP: composite `EpsilonPlusFlat` with `ResNetCanonizer` (merges BatchNorm into the
convolutions and makes the residual additions explicit, which captum's LRP gets wrong),
attributor `Gradient` seeded with the one-hot of the predicted class. The heatmap is the
input relevance summed over the colour channels, signed.

All functions take ImageNet-normalised inputs (N, 3, H, W) and a classifier that maps them
to logits (N, C); they return heatmaps (N, H, W) and the predicted classes (N,), on CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempo_cli.explain.common import batches

METHODS = ("lrp", "integrated-gradients", "saliency")


def one_hot_of_prediction(output: torch.Tensor) -> torch.Tensor:
    """(N, C) logits -> (N, C) one-hot of the arg-max: the relevance LRP starts from."""
    return nn.functional.one_hot(output.argmax(1), output.shape[1]).to(output.dtype)


def lrp_relevance(classifier: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input relevance of one batch.

    Args:
        classifier: eval-mode module with torchvision ResNet blocks, (N,3,H,W) -> (N,C).
        x: normalised images (N, 3, H, W).

    Returns:
        relevance (N, 3, H, W) (not summed over channels) and logits (N, C).
    """
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    with Gradient(model=classifier, composite=composite) as attributor:
        output, relevance = attributor(x, one_hot_of_prediction)
    return relevance.detach(), output.detach()


def _captum(
    classifier: nn.Module, x: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """captum integrated gradients (baseline 0 = the mean image) or saliency (|grad|)."""
    from captum.attr import IntegratedGradients, Saliency

    with torch.no_grad():
        logits = classifier(x)
    target = logits.argmax(1)
    x = x.detach().clone().requires_grad_(True)  # captum warns when it has to do this
    if method == "integrated-gradients":
        attr = IntegratedGradients(classifier).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=32
        )
    else:
        attr = Saliency(classifier).attribute(x, target=target, abs=True)
    return attr.detach(), logits


def attribute(
    classifier: nn.Module, x: torch.Tensor, method: str = "lrp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (N, H, W) (channel sum) and predictions (N,) of one batch `x` (N,3,H,W)."""
    if method == "lrp":
        rel, logits = lrp_relevance(classifier, x)
    elif method in METHODS:
        rel, logits = _captum(classifier, x, method)
    else:  # settings validate this; a clear error for library callers
        raise ValueError(f"unknown attribution method {method!r}; one of {METHODS}")
    return rel.sum(1).cpu(), logits.argmax(1).cpu()


def heatmaps(
    classifier: nn.Module,
    pixels: torch.Tensor,
    method: str,
    batch_size: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched `attribute` over [0, 1] pixels (N, 3, H, W) (normalised here).

    Returns heatmaps float32 (N, H, W) and predictions LongTensor (N,), on CPU.
    `on_batch(n)` is called after each batch (progress bars).
    """
    from tempo_cli.explain.common import normalize

    maps, preds = [], []
    for s in batches(pixels.shape[0], batch_size):
        h, p = attribute(classifier, normalize(pixels[s].to(device)), method)
        maps.append(h)
        preds.append(p)
        if on_batch is not None:
            on_batch(s.stop - s.start)
    if not maps:
        size = pixels.shape[-2:]
        return torch.zeros(0, *size), torch.zeros(0, dtype=torch.long)
    return torch.cat(maps), torch.cat(preds)
