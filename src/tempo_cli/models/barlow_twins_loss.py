"""Barlow Twins loss (Zbontar et al. 2021), as SPEC.md "Loss" states it.

Each embedding dimension is standardised over the batch exactly as lightly's
`BarlowTwinsLoss` does (`F.batch_norm(training=True)`: biased variance, eps 1e-5), then
C = z_a^T z_b / N (D, D) and loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2.

With `gather_distributed=True` (and an initialised process group of world size > 1)
the embeddings of every rank are all-gathered *with gradient* (`_GatherWithGrad`)
before standardising, so the loss equals the one-process loss on the global batch
(averaging per-rank C's, as lightly does, would standardise with per-rank statistics).
The backward of the all-gather sums the gradients of all ranks, so each rank's gradient
is world_size times the one-process gradient of its shard; DDP's gradient averaging
divides that factor out again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, D) -> (N, D) with per-dimension mean 0 and (biased) std 1 over the batch."""
    return F.batch_norm(z, None, None, weight=None, bias=None, training=True, eps=eps)


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
    """Barlow Twins loss with redundancy weight `lambda_param` (reference 1e-3)."""

    def __init__(self, lambda_param: float = 1e-3, gather_distributed: bool = False) -> None:
        super().__init__()
        self.lambda_param = lambda_param
        self.gather_distributed = gather_distributed

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
        c = standardize(z_a).T @ standardize(z_b) / n  # (D, D)
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + self.lambda_param * off_diag
