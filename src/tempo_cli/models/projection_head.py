"""The Barlow Twins projection head of the reference (SPEC.md "Model")."""

from __future__ import annotations

import torch
from torch import nn

from tempo_cli.models.backbones import FEATURE_DIM, check_arch


class ProjectionHead(nn.Sequential):
    """Linear(no bias) - BN1d - ReLU - Linear(no bias) - BN1d - ReLU - Linear.

    Forward (N, in_dim) -> (N, out_dim). Being an `nn.Sequential`, its state-dict keys are
    `0.weight`, `1.*` (BN), `3.weight`, `4.*` (BN), `6.weight`, `6.bias`.
    """

    def __init__(self, in_dim: int = 512, hidden_dim: int = 1024, out_dim: int = 1024) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        return super().forward(x)


def head_dims(arch: str) -> tuple[int, int, int]:
    """(in, hidden, out): 512->1024->1024 for resnet18/34, 2048->2048->2048 for resnet50."""
    check_arch(arch)
    d = FEATURE_DIM[arch]
    return (d, 1024, 1024) if d == 512 else (d, d, d)


def head_for(arch: str) -> ProjectionHead:
    """The reference projection head for `arch`."""
    return ProjectionHead(*head_dims(arch))
