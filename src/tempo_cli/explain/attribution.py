"""Heatmaps: zennit LRP (SPEC.md) and, for comparison, captum attributions.

Methods are small registered objects: `METHODS` maps the `--method` name to an
`Attribution`; adding one is a class with `relevance()` plus one line in `METHODS` (and
the name in the settings' `Literal`, which a test keeps equal to `METHODS`).

LRP: composite `EpsilonPlusFlat` with `ResNetCanonizer` (merges BatchNorm into the
convolutions and makes the residual additions explicit, which captum's LRP gets wrong),
attributor `Gradient` seeded with the one-hot of the predicted class. The heatmap is the
input relevance summed over the colour channels, signed.

All methods take ImageNet-normalised inputs (N, 3, H, W) and a classifier that maps them
to logits (N, C); `attribute` returns heatmaps (N, H, W) and the predicted classes (N,).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tempo_cli.data.transforms import normalize


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering range(n)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


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


class Attribution(ABC):
    """A `--method`: per-pixel relevance for the predicted class of each image."""

    @abstractmethod
    def relevance(
        self, classifier: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (N, 3, H, W) -> relevance (N, 3, H, W) and logits (N, C)."""


class LRP(Attribution):
    """zennit LRP, EpsilonPlusFlat with the ResNet canonizer (the study's heatmaps)."""

    def relevance(
        self, classifier: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return lrp_relevance(classifier, x)


class _Captum(Attribution):
    """A captum attribution of the predicted class."""

    def relevance(
        self, classifier: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = classifier(x)
        x = x.detach().clone().requires_grad_(True)  # captum warns when it has to do this
        return self.attribute(classifier, x, logits.argmax(1)).detach(), logits

    @abstractmethod
    def attribute(self, classifier: nn.Module, x: torch.Tensor, target: torch.Tensor):
        """captum's attribution (N, 3, H, W) of classes `target` (N,)."""


class IntegratedGradients(_Captum):
    """captum integrated gradients, 32 steps, baseline 0 (the mean image once normalised)."""

    def attribute(self, classifier: nn.Module, x: torch.Tensor, target: torch.Tensor):
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(classifier).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=32
        )


class Saliency(_Captum):
    """captum saliency: |gradient| of the class score."""

    def attribute(self, classifier: nn.Module, x: torch.Tensor, target: torch.Tensor):
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(classifier).attribute(x, target=target, abs=True)


METHODS: dict[str, Attribution] = {
    "lrp": LRP(),
    "integrated-gradients": IntegratedGradients(),
    "saliency": Saliency(),
}


def attribute(
    classifier: nn.Module, x: torch.Tensor, method: str = "lrp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (N, H, W) (channel sum) and predictions (N,) of one batch `x` (N,3,H,W), CPU."""
    if method not in METHODS:  # settings validate this; a clear error for library callers
        raise ValueError(f"unknown attribution method {method!r}; one of {tuple(METHODS)}")
    rel, logits = METHODS[method].relevance(classifier, x)
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
