"""A backbone with a linear classification head."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """`linear(backbone(x))`: images (N, 3, H, W) -> logits (N, C).

    `backbone` maps (N, 3, H, W) -> (N, d) (a ResNet with `fc = Identity`);
    `linear` is `nn.Linear(d, C)`.
    """

    def __init__(self, backbone: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C) logits."""
        return self.linear(torch.flatten(self.backbone(x), 1))
