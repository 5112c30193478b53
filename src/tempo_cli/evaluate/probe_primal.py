"""The primal form of the batched linear probe: large splits.

Weights (R, L*C, d) updated by `bmm`, one per step for every run and lr; the test logits
of K consecutive scored steps are computed by ONE matmul `test_x (M, d) @ (d, K*R*C)`
(`probe_setup.batched_accuracy` on snapshots of the weights). Entry point:
`train_primal`, called by `linear_probe.train_probe_grid`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tempo_cli.evaluate.probe_setup import CHUNK_BYTES, ProbeSetup, batched_accuracy


def train_primal(s: ProbeSetup) -> tuple[Tensor, Tensor, Tensor]:
    """Primal form: weights (R, L*C, d) updated by batched matmuls (one per step for every
    run and lr); test logits of the scored steps computed from snapshots of the weights,
    K steps per matmul."""
    x, tx, y, ty = s.x, s.tx, s.y, s.ty
    r, n_lr, c, d = s.order.shape[0], s.n_lr, s.num_classes, x.shape[1]
    h = s.heads
    batches = s.batches()
    xb = [x[idx].contiguous() for idx in batches]  # (R, B_j, d)
    yb = [F.one_hot(y[idx], c).to(torch.float32).unsqueeze(2) for idx in batches]  # (R,B,1,C)
    weight, bias = s.weight.clone(), s.bias.clone()  # (R, L*C, d), (R, L*C)
    update = _primal_update(s, weight, bias)

    k_chunk = max(1, min(s.iterations + 1, CHUNK_BYTES // (4 * h * c * max(d, tx.shape[0]))))
    w_buf = torch.empty(k_chunk, r, n_lr * c, d, device=x.device)
    b_buf = torch.empty(k_chunk, r, n_lr * c, device=x.device)
    buf_steps: list[int] = []
    acc = torch.full((s.iterations + 1, h), float("nan"), device=x.device)

    def flush() -> None:
        if buf_steps:
            k = len(buf_steps)
            scores = batched_accuracy(tx, ty, w_buf[:k].view(k * h, c, d), b_buf[:k].view(k * h, c))
            acc[buf_steps] = scores.view(k, h)
            buf_steps.clear()

    def snapshot(step: int) -> None:
        w_buf[len(buf_steps)].copy_(weight)
        b_buf[len(buf_steps)].copy_(bias)
        buf_steps.append(step)
        if len(buf_steps) == k_chunk:
            flush()

    snapshot(0)
    nb = len(batches)
    for t in range(s.iterations):
        j = t % nb
        xj, yj = xb[j], yb[j]  # (R, B, d), (R, B, 1, C)
        logits = torch.baddbmm(bias.unsqueeze(1), xj, weight.transpose(1, 2))  # (R, B, L*C)
        grad = torch.softmax(logits.view(r, -1, n_lr, c), dim=3).sub_(yj).div_(xj.shape[1])
        update(grad, xj)  # grad: dLoss/dlogits (R, B, L, C)
        step = t + 1
        if s.scored_step(step):
            snapshot(step)
        s.tick(step)
    flush()
    return acc.T.contiguous().cpu(), weight, bias


def _primal_update(s: ProbeSetup, weight: Tensor, bias: Tensor) -> Callable[[Tensor, Tensor], None]:
    """SGD with weight decay, as torch.optim.SGD: p <- p - lr * (g + wd * p) = decay * p -
    lr * g, per lr. Returns `update(grad (R, B, L, C), xj (R, B, d))` acting in place on
    weight (R, L*C, d) and bias (R, L*C)."""
    r, n_lr, c = weight.shape[0], s.n_lr, s.num_classes
    if n_lr == 1:  # scalars: the single-lr speed
        lr, decay = s.lrs[0], s.decays[0]

        def one(grad: Tensor, xj: Tensor) -> None:
            g = grad.view(r, -1, c)
            weight.baddbmm_(g.transpose(1, 2), xj, beta=decay, alpha=-lr)
            bias.mul_(decay).sub_(g.sum(dim=1), alpha=lr)

        return one
    lrs = s.per_lr(s.lrs, 4, dim=2)  # (1, 1, L, 1)
    beta = s.uniform_decay()
    decay = None if beta is not None else s.per_lr(s.decays, 3)  # (1, L, 1)

    def grid(grad: Tensor, xj: Tensor) -> None:
        g = grad.mul_(lrs).view(r, -1, n_lr * c)  # lr_l * grad
        if decay is not None:
            weight.view(r, n_lr, -1).mul_(decay)
            bias.view(r, n_lr, c).mul_(decay)
        elif beta != 1.0:
            bias.mul_(beta)
        weight.baddbmm_(g.transpose(1, 2), xj, beta=1.0 if beta is None else beta, alpha=-1.0)
        bias.sub_(g.sum(dim=1))

    return grid
