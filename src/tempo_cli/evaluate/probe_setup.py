"""The device-side state of one batched probe pass, shared by its two training forms.

`ProbeSetup` holds what `linear_probe.train_probe_grid` hands to a training form
(`probe_kernel.train_kernel` or `probe_primal.train_primal`): the features on the device,
each run's batch order, the R*L initial heads laid out (R, L*C, ...) and the per-lr step
sizes and decays. `batched_accuracy` scores many heads on one split by a few matmuls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# Bytes allowed for the stacked heads and for the deferred test logits (per chunk).
CHUNK_BYTES = 48 * 2**20


def batched_accuracy(
    test_x: Tensor, test_y: Tensor, weight: Tensor, bias: Tensor, chunk: int | None = None
) -> Tensor:
    """Accuracy of many heads on one test set, by a few large matmuls.

    Args:
        test_x: (M, d) features; test_y: (M,) labels.
        weight: (H, C, d) heads; bias: (H, C).
    Returns:
        (H,) accuracies (fractions), float32 on weight's device.
    """
    h, c, d = weight.shape
    m = test_x.shape[0]
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // max(1, 4 * c * max(m, d)))
    out = torch.empty(h, device=weight.device)
    for lo in range(0, h, chunk):
        w = weight[lo : lo + chunk]
        logits = test_x @ w.reshape(-1, d).T  # (M, k*C)
        logits = logits.view(m, -1, c) + bias[lo : lo + chunk].unsqueeze(0)  # (M, k, C)
        correct = logits.argmax(dim=2) == test_y.unsqueeze(1)  # (M, k)
        out[lo : lo + chunk] = correct.float().mean(dim=0)
    return out


@dataclass
class ProbeSetup:
    """Everything on the device. H = R*L heads, run-major: head r*L + l = run r, lr l."""

    x: Tensor  # (N, d) all training features (rows picked through `order`)
    y: Tensor  # (N,)
    tx: Tensor  # (M, d)
    ty: Tensor  # (M,)
    order: Tensor  # (R, n_sub) each run's training rows in batch order
    weight: Tensor  # (R, L*C, d) initial heads
    bias: Tensor  # (R, L*C)
    num_classes: int
    iterations: int
    batch_size: int
    lrs: list[float]  # (L,)
    weight_decay: float
    eval_every: int
    progress: Callable[[int], None] | None

    @property
    def n_lr(self) -> int:
        return len(self.lrs)

    @property
    def heads(self) -> int:
        return self.order.shape[0] * len(self.lrs)

    @property
    def decays(self) -> list[float]:
        """(L,) the per-step weight-decay factor 1 - lr * wd of each lr."""
        return [1.0 - lr * self.weight_decay for lr in self.lrs]

    def per_lr(self, values: list[float], ndim: int, dim: int = 1) -> Tensor:
        """`values` (L,) as a tensor of `ndim` dims, L at `dim`, to broadcast over heads."""
        shape = [1] * ndim
        shape[dim] = len(values)
        return torch.tensor(values, device=self.x.device).view(shape)

    def uniform_decay(self) -> float | None:
        """The decay factor shared by every lr (e.g. no weight decay), else None."""
        decays = self.decays
        return decays[0] if all(dc == decays[0] for dc in decays) else None

    def batches(self) -> list[Tensor]:
        """Index blocks (R, B_j) of batch j of every run (one shuffled pass, cycled)."""
        return list(self.order.split(self.batch_size, dim=1))

    def scored_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.iterations

    def tick(self, step: int) -> None:
        if self.progress is not None and (step % 100 == 0 or step == self.iterations):
            self.progress(step)
