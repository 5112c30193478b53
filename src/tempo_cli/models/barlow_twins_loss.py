"""Barlow Twins loss (Zbontar et al. 2021), as SPEC.md "Loss" states it.

Each embedding dimension is standardised over the batch, then C = z_a^T z_b / N (D, D)
and loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2. Two standardisations are
registered in `STANDARDIZATIONS` (`--loss-std`):

- `unbiased` (the default): (z - mean) / std with the UNBIASED std (N - 1) and no epsilon,
  as lightly 1.2.35 (the version the reference pins) computes `z.std(0)`. A dimension that
  is constant over the batch (std 0), where lightly divides 0 by 0 (NaN), standardises
  to 0 here, with finite gradients: the effect of a tiny epsilon, applied only there;
  every other dimension gets lightly 1.2.35's value exactly.
- `biased`: `F.batch_norm(training=True)`, i.e. the biased std (N) plus eps 1e-5, as newer
  lightly and tempo before this option did. It scales C by about (N - 1) / N, so the
  on-diagonal term cannot reach zero (its floor is about D / N^2).

With `gather_distributed=True` (and an initialised process group of world size > 1)
the embeddings of every rank are all-gathered *with gradient* (`_GatherWithGrad`)
before standardising, so the loss equals the one-process loss on the global batch with
either standardisation (averaging per-rank C's, as lightly does, would standardise with
per-rank statistics). The backward of the all-gather sums the gradients of all ranks, so
each rank's gradient is world_size times the one-process gradient of its shard; DDP's
gradient averaging divides that factor out again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

#: The epsilon of the `biased` standardisation (F.batch_norm's and newer lightly's).
BIASED_EPS = 1e-5


def standardize_unbiased(z: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, D): (z - mean) / unbiased std per dimension, as lightly 1.2.35;
    a dimension constant over the batch (std 0) becomes 0 instead of NaN."""
    var = z.var(0, correction=1)  # (D,)
    constant = var == 0
    std = torch.where(constant, torch.ones_like(var), var).sqrt()
    return torch.where(constant, torch.zeros_like(z), (z - z.mean(0)) / std)


def standardize(z: torch.Tensor, eps: float = BIASED_EPS) -> torch.Tensor:
    """(N, D) -> (N, D) with per-dimension mean 0 and (biased) std 1 over the batch."""
    return F.batch_norm(z, None, None, weight=None, bias=None, training=True, eps=eps)


@dataclass(frozen=True)
class Standardization:
    """One way to standardise the embeddings before the cross-correlation (`--loss-std`)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    summary: str


UNBIASED = Standardization(
    "unbiased", standardize_unbiased, "unbiased std, no epsilon (lightly 1.2.35, the reference)"
)
BIASED = Standardization("biased", standardize, "biased std + 1e-5 (newer lightly)")
STANDARDIZATIONS: dict[str, Standardization] = {s.name: s for s in (UNBIASED, BIASED)}


def off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """The D*(D-1) off-diagonal entries of a square (D, D) matrix, flattened."""
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather (n_r, D) shards into (sum n_r, D) in rank order, with gradient.

    Shards may differ in size (the last batch of an epoch). Backward sums the gradient of
    the gathered tensor over ranks and returns this rank's rows, like
    `torch.distributed.nn.functional.all_gather` (deprecated in torch 2.14) does.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        n = torch.tensor([z.shape[0]], device=z.device, dtype=torch.long)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        counts = [int(s.item()) for s in sizes]
        biggest = max(counts)
        padded = z.new_zeros((biggest, *z.shape[1:]))
        padded[: z.shape[0]] = z
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        rank = dist.get_rank()
        ctx.start = sum(counts[:rank])
        ctx.n = counts[rank]
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n]


def _gather(z: torch.Tensor) -> torch.Tensor:
    """(n, D) per rank -> (sum n, D) in rank order, differentiable."""
    return _GatherWithGrad.apply(z)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss with redundancy weight `lambda_param` (reference 1e-3) and the
    standardisation `std` (a `STANDARDIZATIONS` name; `unbiased` is the reference's)."""

    def __init__(
        self,
        lambda_param: float = 1e-3,
        gather_distributed: bool = False,
        std: str = "unbiased",
    ) -> None:
        super().__init__()
        self.lambda_param = lambda_param
        self.gather_distributed = gather_distributed
        if std not in STANDARDIZATIONS:
            raise ValueError(f"std must be one of {', '.join(STANDARDIZATIONS)}, got {std!r}")
        self.standardization = STANDARDIZATIONS[std]

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: (N, D) embeddings of the two frames of each pair -> scalar loss."""
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(
                f"expected two (N, D) tensors, got {tuple(z_a.shape)}, {tuple(z_b.shape)}"
            )
        if (
            self.gather_distributed
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            z_a, z_b = _gather(z_a), _gather(z_b)
        # Half precision (autocast) is upcast: the standardisation and the D x D
        # correlation lose too much in 16 bits. float64 stays float64.
        if z_a.dtype in (torch.float16, torch.bfloat16):
            z_a, z_b = z_a.float(), z_b.float()
        n = z_a.shape[0]
        norm = self.standardization.fn
        c = norm(z_a).T @ norm(z_b) / n  # (D, D)
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + self.lambda_param * off_diag
