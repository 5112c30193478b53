"""The kernel (Gram-matrix) form of the batched linear probe: few-shot splits.

With a constant 1 appended to the features, the logits of every train and test item are
kept up to date through the Gram matrix, so a step costs (N+M) x B x C per run and test
accuracy is an argmax over logits already there (`_Scorer`). The Gram blocks depend on
the run only, so one `bmm` over the R runs serves every lr of a grid. The weights are
kept in dual form (`_DualWeights`) and the logits recomputed exactly at regular
intervals, which bounds their drift. Entry point: `train_kernel`, called by
`linear_probe.train_probe_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tempo_cli.evaluate.probe_setup import ProbeSetup

# Bytes of the kernel form's test-logit snapshots and gradient history (cache-sized).
_SCORE_BYTES = 2 * 2**20


class _Scorer:
    """Deferred scoring of test logits snapshots, kept class-major (K, H, C, M).

    Accuracy is `argmax over classes == label`, computed without argmax (whose reduction
    over a short last dimension is slow): the label's logit must reach the maximum over
    classes and strictly beat every earlier class (argmax keeps the first of tied maxima;
    near-constant features, e.g. a random network's in eval mode, do produce ties).
    Both maxima reduce over a non-last dimension: elementwise maxima of contiguous rows.
    """

    def __init__(self, s: ProbeSetup) -> None:
        h, m, c = s.heads, s.ty.shape[0], s.num_classes
        dev = s.ty.device
        self.k = max(1, min(s.iterations + 1, _SCORE_BYTES // (4 * h * m * c)))
        self.buf = torch.empty(self.k, h, c, m, device=dev)
        self.views = list(self.buf.unbind(0))  # (H, C, M) each
        self.label = s.ty.view(1, 1, 1, m).expand(self.k, h, 1, m)
        cls = torch.arange(c, device=dev).unsqueeze(1)  # (C, 1)
        # 0 where the class comes before the label, -inf elsewhere: (C, M)
        self.before = torch.zeros(c, m, device=dev).masked_fill_(cls >= s.ty, float("-inf"))
        self.steps: list[int] = []
        self.acc = torch.full((s.iterations + 1, h), float("nan"), device=dev)

    def add(self, step: int, test_logits_t: Tensor) -> None:
        """test_logits_t: (H, C, M)."""
        self.views[len(self.steps)].copy_(test_logits_t)
        self.steps.append(step)
        if len(self.steps) == self.k:
            self.flush()

    def flush(self) -> None:
        if not self.steps:
            return
        k = len(self.steps)
        buf = self.buf[:k]  # (k, H, C, M)
        top = buf.amax(dim=2)  # (k, H, M)
        own = buf.gather(2, self.label[:k]).squeeze(2)  # (k, H, M)
        earlier = (buf + self.before).amax(dim=2)  # (k, H, M), -inf when the label is 0
        self.acc[self.steps] = ((own >= top) & (own > earlier)).float().mean(dim=2)
        self.steps.clear()

    def result(self) -> Tensor:
        self.flush()
        return self.acc.T.contiguous().cpu()  # (H, T+1)


def _kernel_blocks(
    s: ProbeSetup,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], list[tuple[int, int]]]:
    """The kernel form's per-run data, shared by every lr (computed for R runs, not H).

    Returns:
        xr (R, n, d+1): each run's training rows [x, 1] in its batch order (n = n_sub);
        zr (R, n+M, d+1): xr, then the test rows [tx, 1];
        grams: per batch slot j, (R, B_j, n+M) = (Z' X'_b^T)^T;
        ys: per slot, one-hot labels (R, 1, C, B_j) (the 1 broadcasts over the lrs);
        slots: the (lo, hi) rows of each batch slot.
    """
    x, tx = s.x, s.tx
    r, n = s.order.shape
    m, dev = tx.shape[0], x.device
    xr = torch.cat([x, torch.ones(x.shape[0], 1, device=dev)], dim=1)[s.order]
    txr = torch.cat([tx, torch.ones(m, 1, device=dev)], dim=1)  # (M, d+1)
    zr = torch.cat([xr, txr.expand(r, m, -1)], dim=1)
    gram_t = torch.bmm(xr, zr.transpose(1, 2))  # (R, n, n+M)
    slots = [(lo, min(lo + s.batch_size, n)) for lo in range(0, n, s.batch_size)]
    grams = [gram_t[:, lo:hi].contiguous() for lo, hi in slots]
    del gram_t
    yt = F.one_hot(s.y[s.order], s.num_classes).to(torch.float32).transpose(1, 2)  # (R, C, n)
    ys = [yt[:, None, :, lo:hi] for lo, hi in slots]
    return xr, zr, grams, ys, slots


class _DualWeights:
    """The kernel form's weights W'_t = s_t (W'_0 + U_t^T X') per head, s_t = decay^t
    per lr, with the logit gradients of a window of steps kept in a history and folded
    into U once per window (one weighted sum per batch slot)."""

    def __init__(self, s: ProbeSetup, xr: Tensor, slots: list[tuple[int, int]]) -> None:
        r, n, c, n_lr = xr.shape[0], xr.shape[1], s.num_classes, s.n_lr
        dev = xr.device
        bmax = slots[0][1] - slots[0][0]
        self.xr, self.slots, self.decays = xr, slots, s.decays
        self.w0 = torch.cat([s.weight, s.bias.unsqueeze(2)], dim=2)  # W'_0 (R, L*C, d+1)
        self.ut = torch.zeros(r, n_lr, c, n, device=dev)  # U^T
        self.scale = [1.0] * n_lr  # s_t per lr
        # alphas[j][l]: the step size of lr l on batch slot j (the 1/B of the mean loss)
        self.alphas = [[lr / (hi - lo) for lr in s.lrs] for lo, hi in slots]
        # hist[i]: g^T (R, L, C, B) of step t0+i+1 of the current window
        self.k = max(1, min(s.iterations, _SCORE_BYTES // (4 * s.heads * c * bmax)))
        self.hist = torch.empty(self.k, r, n_lr, c, bmax, device=dev)
        self.views = [[g[..., : hi - lo] for lo, hi in slots] for g in self.hist.unbind(0)]

    def fold(self, t0: int, count: int) -> None:
        """Add hist[0..count-1] (steps t0+1 .. t0+count) into U^T; advance s_t."""
        nb, coefs = len(self.slots), []
        for i in range(count):
            alphas = self.alphas[(t0 + i) % nb]
            self.scale = [sc * dc for sc, dc in zip(self.scale, self.decays, strict=True)]
            coefs.append([-a / sc for a, sc in zip(alphas, self.scale, strict=True)])
        coef = torch.tensor(coefs, device=self.ut.device)  # (count, L)
        for j, (lo, hi) in enumerate(self.slots):
            first = (j - t0) % nb
            if first < count:
                # (k_j, L) . (k_j, R, L, C, B_j) -> (R, L, C, B_j): this slot's steps
                g = self.hist[first:count:nb, ..., : hi - lo]
                self.ut[..., lo:hi] += torch.einsum("kl,krlcb->rlcb", coef[first:count:nb], g)

    def weights(self) -> Tensor:
        """W'_t (R, L*C, d+1)."""
        r, n_lr, c, n = self.ut.shape
        w = self.w0 + torch.bmm(self.ut.view(r, n_lr * c, n), self.xr)
        scale = torch.tensor(self.scale, device=w.device).view(1, n_lr, 1, 1)
        return (w.view(r, n_lr, c, -1) * scale).view(r, n_lr * c, -1)

    def resync(self) -> None:
        """W'_0 <- W'_t, U <- 0, s <- 1 (bounds the drift of the tracked logits)."""
        self.w0 = self.weights()
        self.ut.zero_()
        self.scale = [1.0] * len(self.scale)


def train_kernel(s: ProbeSetup) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel form: the logits of every train and test item are updated in place.

    Append a constant 1 to every feature so the bias is the last weight column:
    x' = [x, 1], W' = [W, b] (H, C, d+1). One SGD step on batch b with logit gradient g
    (H, B, C) is W' <- decay * W' - lr/B * g^T X'_b, so the logits of all rows
    Z' = [X'; X'_test] move by `decay * L - lr/B * (Z' X'_b^T) g`: (n+M) x B x C work per
    head instead of 2 x B x d x C, with the Gram blocks Z' X'_b^T computed once per run
    and batch slot and shared by the L lrs: logits are (R, L*C, n+M), so one `bmm` over
    the R runs updates every lr. Rows are kept per run in batch order (a batch is a
    contiguous slice). Every `resync` steps W' is rebuilt and the logits recomputed
    exactly (bounded drift; `_DualWeights`).

    Everything is kept class-major (logits L^T, gradients g^T) so that the scorer reduces
    over classes quickly. With one lr a step is four torch calls (softmax, `sub(out=)`,
    `baddbmm_`, the scorer's copy); several lrs add the per-lr step size (and decay).
    """
    xr, zr, grams, ys, slots = _kernel_blocks(s)
    r, n = s.order.shape
    n_lr, c = s.n_lr, s.num_classes
    dual = _DualWeights(s, xr, slots)
    logits = torch.bmm(dual.w0, zr.transpose(1, 2))  # L^T (R, L*C, n+M)
    logits4 = logits.view(r, n_lr, c, -1)
    train_views = [logits4[..., lo:hi] for lo, hi in slots]  # (R, L, C, B_j)
    test_view = logits.view(r * n_lr, c, -1)[:, :, n:]  # (H, C, M)
    scorer = _Scorer(s)
    scorer.add(0, test_view)
    step_fn = _kernel_step(s, logits, slots)
    low = min(s.decays)
    resync = 250 if low > 0.95 else max(1, int(math.log(1e-6) / math.log(max(low, 1e-30))))

    t0, steps_total, nb = 0, s.iterations, len(slots)
    while t0 < steps_total:
        end = min(steps_total, t0 + dual.k, (t0 // resync + 1) * resync)
        for i in range(end - t0):
            step = t0 + i + 1
            j = (step - 1) % nb
            g = dual.views[i][j]
            # dLoss/dlogits * B = softmax - onehot (the 1/B goes into alpha)
            torch.sub(torch.softmax(train_views[j], dim=2), ys[j], out=g)
            step_fn(g, grams[j], j)
            if step % resync == 0 and step < steps_total:
                break  # the window ends here (end is this step)
            if s.eval_every == 1 or s.scored_step(step):
                scorer.add(step, test_view)
        dual.fold(t0, end - t0)
        t0 = end
        if t0 % resync == 0 and t0 < steps_total:
            dual.resync()
            torch.bmm(dual.w0, zr.transpose(1, 2), out=logits)
            if s.scored_step(t0):
                scorer.add(t0, test_view)
        if s.progress is not None:
            s.progress(t0)
    w = dual.weights()  # (R, L*C, d+1)
    return scorer.result(), w[:, :, :-1].contiguous(), w[:, :, -1].contiguous()


def _kernel_step(
    s: ProbeSetup, logits: Tensor, slots: list[tuple[int, int]]
) -> Callable[[Tensor, Tensor, int], None]:
    """The logit update of one kernel step: `step(g (R, L, C, B_j), gram_j, j)` does
    logits (R, L*C, n+M) <- decay * logits - lr/B_j * g gram_j, per lr."""
    r, n_lr, c = logits.shape[0], s.n_lr, s.num_classes
    if n_lr == 1:  # scalars: one baddbmm_ (the single-lr speed)
        decay, alphas = s.decays[0], [s.lrs[0] / (hi - lo) for lo, hi in slots]

        def one(g: Tensor, gram: Tensor, j: int) -> None:
            logits.baddbmm_(g.view(r, c, -1), gram, beta=decay, alpha=-alphas[j])

        return one
    bmax = slots[0][1] - slots[0][0]
    scaled = torch.empty(r, n_lr, c, bmax, device=logits.device)
    scaled_views = [scaled[..., : hi - lo] for lo, hi in slots]
    neg_alpha = [s.per_lr([-lr / (hi - lo) for lr in s.lrs], 4) for lo, hi in slots]
    beta = s.uniform_decay()
    decay = None if beta is not None else s.per_lr(s.decays, 3)  # (1, L, 1)
    logits3 = logits.view(r, n_lr, -1)

    def grid(g: Tensor, gram: Tensor, j: int) -> None:
        gs = torch.mul(g, neg_alpha[j], out=scaled_views[j])  # -lr_l/B_j * g
        if decay is not None:
            logits3.mul_(decay)
        logits.baddbmm_(gs.view(r, n_lr * c, -1), gram, beta=1.0 if beta is None else beta)

    return grid
