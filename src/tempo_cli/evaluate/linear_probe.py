"""Linear probes on frozen features: every run of a setting trained at once.

The reference protocol (SPEC.md) trains R fresh `Linear(d, C)` heads one after the other,
each with its own shuffled batches of 24 training features, cycled for 3,000 SGD steps
(lr 0.01, weight decay 1e-4, cross-entropy; the `eval linear` defaults, given here as a
`ProbeConfig`), and measures test accuracy before the first step and after every step.
Here the R heads are one tensor `weight (R, C, d)`:

- one step updates all heads with the closed-form cross-entropy gradient
  `(softmax - onehot) / B` (no autograd, no optimiser object: at these sizes they cost
  more than the arithmetic);
- "kernel" form (few-shot splits): with a constant 1 appended to the features, the logits
  of every train and test item are kept up to date through the Gram matrix, so a step
  costs (N+M) x B x C per run and test accuracy is an argmax over logits already there;
- "primal" form (large splits): weights (R, C, d) updated by `bmm`; the test logits of K
  consecutive steps are computed by ONE matmul `test_x (M, d) @ (d, K*R*C)`.

Each run draws its batch order and its head initialisation from its own generator
(`run_generator(seed, run)`), exactly as `tempo_cli.evaluate.reference` does one run at a
time, so the batched probe reproduces the sequential protocol to float tolerance
(tests/test_eval_probe.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempo_cli.evaluate.config import ProbeConfig

# Bytes allowed for the stacked heads and for the deferred test logits (per chunk).
_CHUNK_BYTES = 48 * 2**20
# Bytes of the kernel form's test-logit snapshots and gradient history (cache-sized).
_SCORE_BYTES = 2 * 2**20


def run_generator(seed: int, run: int) -> torch.Generator:
    """The CPU generator of run `run`: its batch order, then its head initialisation."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(run)) % (2**63 - 1))
    return g


def batch_order(n: int, batch_size: int, g: torch.Generator) -> Tensor:
    """One shuffled pass over `n` training items, as the reference's shuffled loader.

    Returns:
        LongTensor (n,): a permutation; batch j is `order[j*B : (j+1)*B]` (the last one
        may be shorter). The reference caches these batches once per run and cycles them.
    """
    del batch_size  # the split into batches is positional; kept for clarity at call sites
    return torch.randperm(n, generator=g)


def init_head(num_classes: int, dim: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """A fresh head with `nn.Linear`'s default distribution: U(-1/sqrt(d), 1/sqrt(d)).

    Returns:
        weight (C, d), bias (C,), float32 on CPU.
    """
    bound = 1.0 / math.sqrt(dim)
    weight = (torch.rand(num_classes, dim, generator=g) * 2 - 1) * bound
    bias = (torch.rand(num_classes, generator=g) * 2 - 1) * bound
    return weight, bias


def run_setup(
    n: int, num_classes: int, dim: int, batch_size: int, seed: int, run: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch order (n,), initial weight (C, d) and bias (C,) of one run."""
    g = run_generator(seed, run)
    order = batch_order(n, batch_size, g)
    weight, bias = init_head(num_classes, dim, g)
    return order, weight, bias


@dataclass
class ProbeResult:
    """The outcome of R linear probes trained together.

    accuracy: (R, T+1) test accuracy after 0, 1, ..., T steps (step 0 = the fresh head,
        as the reference measures before its first step).
    weight: (R, C, d), bias: (R, C): the heads after T steps.
    best_run: index of the run with the highest final accuracy (ties: the higher best).
    """

    accuracy: Tensor
    weight: Tensor
    bias: Tensor
    best_run: int

    @property
    def steps(self) -> Tensor:
        """(T+1,) the step index of each accuracy column."""
        return torch.arange(self.accuracy.shape[1])

    def head(self, run: int | None = None) -> nn.Linear:
        """Run `run` (default: the best) as an `nn.Linear(d, C)` on CPU."""
        r = self.best_run if run is None else run
        c, d = self.weight.shape[1:]
        linear = nn.Linear(d, c)
        with torch.no_grad():
            linear.weight.copy_(self.weight[r].cpu())
            linear.bias.copy_(self.bias[r].cpu())
        return linear


def pick_best_run(accuracy: Tensor) -> int:
    """The run with the highest final accuracy; ties broken by the highest best accuracy."""
    final = accuracy[:, -1]
    best = accuracy.max(dim=1).values
    score = final * 2.0 + best * 1e-3  # final dominates; accuracies lie in [0, 1]
    return int(score.argmax())


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
        chunk = max(1, _CHUNK_BYTES // max(1, 4 * c * max(m, d)))
    out = torch.empty(h, device=weight.device)
    for lo in range(0, h, chunk):
        w = weight[lo : lo + chunk]
        logits = test_x @ w.reshape(-1, d).T  # (M, k*C)
        logits = logits.view(m, -1, c) + bias[lo : lo + chunk].unsqueeze(0)  # (M, k, C)
        correct = logits.argmax(dim=2) == test_y.unsqueeze(1)  # (M, k)
        out[lo : lo + chunk] = correct.float().mean(dim=0)
    return out


@torch.no_grad()
def train_linear_probes(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    config: ProbeConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    method: str = "auto",
    first_run: int = 0,
) -> ProbeResult:
    """Train `config.runs` linear probes at once and score every one on the test set.

    Args:
        train_x: (N, d) float features; train_y: (N,) long labels in [0, C).
        test_x: (M, d) float features; test_y: (M,) long labels.
        num_classes: C.
        config: runs R (run r seeded by `run_generator(config.seed, r)`), iterations T
            (batches of `batch_size` cycle through one shuffled pass over the training
            set, per run, as the reference), lr and weight_decay (plain SGD, decay on
            weight and bias as torch's SGD), eval_every K (score every K steps; unscored
            columns repeat the last score). `bn_stats` does not apply (features given).
        progress: optional callable(steps_done) for a progress bar.
        method: "kernel" (logits kept up to date through the Gram matrix; fastest when
            N is small, the few-shot case), "primal" (weights updated, test scored by
            deferred matmuls) or "auto" (kernel when its Gram blocks fit in 256 MiB).
        first_run: the index of the first run (runs first_run .. first_run + R - 1 are
            trained: `--bn-stats batch` trains each run on features of its own).
    Returns:
        ProbeResult with accuracy (R, T+1), weight (R, C, d), bias (R, C).
    """
    device = torch.device(device)
    n, d = train_x.shape
    m = test_x.shape[0]
    r, batch_size, eval_every = int(config.runs), int(config.batch_size), int(config.eval_every)
    if n == 0 or m == 0:
        raise ValueError("empty training or test features")
    if method == "auto":
        method = "kernel" if 4 * r * (n + m) * n <= 256 * 2**20 else "primal"
    if method not in ("kernel", "primal"):
        raise ValueError(f"unknown method {method!r}")

    orders, weights, biases = [], [], []
    for run in range(r):
        order, w0, b0 = run_setup(n, num_classes, d, batch_size, config.seed, first_run + run)
        orders.append(order)
        weights.append(w0)
        biases.append(b0)
    setup = _Setup(
        x=train_x.to(device=device, dtype=torch.float32),
        y=train_y.to(device),
        tx=test_x.to(device=device, dtype=torch.float32),
        ty=test_y.to(device),
        order=torch.stack(orders).to(device),  # (R, N)
        weight=torch.stack(weights).to(device),  # (R, C, d)
        bias=torch.stack(biases).to(device),  # (R, C)
        num_classes=int(num_classes),
        iterations=int(config.iterations),
        batch_size=batch_size,
        lr=float(config.lr),
        decay=1.0 - float(config.lr) * float(config.weight_decay),
        eval_every=eval_every,
        progress=progress,
    )
    run_fn = _train_kernel if method == "kernel" else _train_primal
    accuracy, weight, bias = run_fn(setup)

    # Unscored steps (eval_every > 1) repeat the previous score.
    if eval_every > 1:
        scored = ~torch.isnan(accuracy[0])
        idx = torch.where(scored, torch.arange(accuracy.shape[1]), 0).cummax(dim=0).values
        accuracy = accuracy[:, idx]
    return ProbeResult(
        accuracy=accuracy,
        weight=weight,
        bias=bias,
        best_run=pick_best_run(accuracy),
    )


@dataclass
class _Setup:
    x: Tensor
    y: Tensor
    tx: Tensor
    ty: Tensor
    order: Tensor
    weight: Tensor
    bias: Tensor
    num_classes: int
    iterations: int
    batch_size: int
    lr: float
    decay: float
    eval_every: int
    progress: Callable[[int], None] | None

    def batches(self) -> list[Tensor]:
        """Index blocks (R, B_j) of batch j of every run (one shuffled pass, cycled)."""
        return list(self.order.split(self.batch_size, dim=1))

    def scored_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.iterations

    def tick(self, step: int) -> None:
        if self.progress is not None and (step % 100 == 0 or step == self.iterations):
            self.progress(step)


class _Scorer:
    """Deferred scoring of test logits snapshots, kept class-major (K, R, C, M).

    Accuracy is `argmax over classes == label`, computed without argmax (whose reduction
    over a short last dimension is slow): the label's logit must reach the maximum over
    classes and strictly beat every earlier class (argmax keeps the first of tied maxima;
    near-constant features, e.g. a random network's in eval mode, do produce ties).
    Both maxima reduce over a non-last dimension: elementwise maxima of contiguous rows.
    """

    def __init__(self, s: _Setup) -> None:
        r, m, c = s.order.shape[0], s.ty.shape[0], s.num_classes
        dev = s.ty.device
        self.k = max(1, min(s.iterations + 1, _SCORE_BYTES // (4 * r * m * c)))
        self.buf = torch.empty(self.k, r, c, m, device=dev)
        self.views = list(self.buf.unbind(0))  # (R, C, M) each
        self.label = s.ty.view(1, 1, 1, m).expand(self.k, r, 1, m)
        cls = torch.arange(c, device=dev).unsqueeze(1)  # (C, 1)
        # 0 where the class comes before the label, -inf elsewhere: (C, M)
        self.before = torch.zeros(c, m, device=dev).masked_fill_(cls >= s.ty, float("-inf"))
        self.steps: list[int] = []
        self.acc = torch.full((s.iterations + 1, r), float("nan"), device=dev)

    def add(self, step: int, test_logits_t: Tensor) -> None:
        """test_logits_t: (R, C, M)."""
        self.views[len(self.steps)].copy_(test_logits_t)
        self.steps.append(step)
        if len(self.steps) == self.k:
            self.flush()

    def flush(self) -> None:
        if not self.steps:
            return
        k = len(self.steps)
        buf = self.buf[:k]  # (k, R, C, M)
        top = buf.amax(dim=2)  # (k, R, M)
        own = buf.gather(2, self.label[:k]).squeeze(2)  # (k, R, M)
        earlier = (buf + self.before).amax(dim=2)  # (k, R, M), -inf when the label is 0
        self.acc[self.steps] = ((own >= top) & (own > earlier)).float().mean(dim=2)
        self.steps.clear()

    def result(self) -> Tensor:
        self.flush()
        return self.acc.T.contiguous().cpu()  # (R, T+1)


def _train_kernel(s: _Setup) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel form: the logits of every train and test item are updated in place.

    Append a constant 1 to every feature so the bias is the last weight column:
    x' = [x, 1], W' = [W, b] (R, C, d+1). One SGD step on batch b with logit gradient g
    (R, B, C) is W' <- decay * W' - lr/B * g^T X'_b, so the logits of all rows
    Z' = [X'; X'_test] move by `decay * L - lr/B * (Z' X'_b^T) g`: (N+M) x B x C work per
    run instead of 2 x B x d x C, with the Gram blocks Z' X'_b^T computed once per batch
    slot. Rows are kept per run in batch order, so a batch is a contiguous slice.
    The weights are tracked as W'_t = s_t (W'_0 + U_t^T X') with s_t = decay^t; every
    `resync` steps W' is rebuilt and the logits recomputed exactly (bounded drift).

    Everything is kept class-major (logits L^T (R, C, N+M), gradients g^T (R, C, B)) so
    that the scorer reduces over classes quickly. A step is four torch calls (softmax,
    `sub(out=)`, `baddbmm_`, the scorer's copy); the gradients go to a history and are
    folded into U once per window of steps (one weighted sum per batch slot).
    """
    x, tx, y = s.x, s.tx, s.y
    r, n = s.order.shape
    m, c = tx.shape[0], s.num_classes
    dev = x.device
    ones = torch.ones(n, 1, device=dev)
    xr = torch.cat([x, ones], dim=1)[s.order]  # (R, N, d+1) rows in each run's batch order
    txr = torch.cat([tx, torch.ones(m, 1, device=dev)], dim=1)  # (M, d+1)
    zr = torch.cat([xr, txr.expand(r, m, -1)], dim=1)  # (R, N+M, d+1)
    gram_t = torch.bmm(xr, zr.transpose(1, 2))  # (R, N, N+M): (Z' X'^T)^T
    bsz = s.batch_size
    slots = [(lo, min(lo + bsz, n)) for lo in range(0, n, bsz)]
    grams = [gram_t[:, lo:hi].contiguous() for lo, hi in slots]  # (R, B_j, N+M)
    del gram_t
    yt = F.one_hot(y[s.order], c).to(torch.float32).transpose(1, 2)  # (R, C, N)
    ys = [yt[:, :, lo:hi] for lo, hi in slots]  # (R, C, B_j)
    alphas = [s.lr / (hi - lo) for lo, hi in slots]
    nb, bmax = len(slots), slots[0][1] - slots[0][0]
    steps_total, decay = s.iterations, s.decay

    w0 = torch.cat([s.weight, s.bias.unsqueeze(2)], dim=2)  # W'_0 (R, C, d+1)
    ut = torch.zeros(r, c, n, device=dev)  # U^T
    scale = 1.0  # s_t
    logits = torch.bmm(w0, zr.transpose(1, 2))  # L^T (R, C, N+M)
    train_views = [logits[:, :, lo:hi] for lo, hi in slots]  # (R, C, B_j)
    test_view = logits[:, :, n:]  # (R, C, M)
    scorer = _Scorer(s)
    scorer.add(0, test_view)
    resync = 250 if decay > 0.95 else max(1, int(math.log(1e-6) / math.log(max(decay, 1e-30))))

    # gradient history: hist[i] is g^T of step t0+i+1 of the current window
    k_hist = max(1, min(steps_total, _SCORE_BYTES // (4 * r * c * bmax)))
    hist = torch.empty(k_hist, r, c, bmax, device=dev)
    hist_views = [[h[:, :, : hi - lo] for lo, hi in slots] for h in hist.unbind(0)]

    def fold(t0: int, count: int, scale: float) -> float:
        """Add hist[0..count-1] (steps t0+1 .. t0+count) into U^T; returns s_t."""
        coefs = []
        for i in range(count):
            scale *= decay
            coefs.append(-alphas[(t0 + i) % nb] / scale)
        coef = torch.tensor(coefs, device=dev)
        for j, (lo, hi) in enumerate(slots):
            first = (j - t0) % nb
            if first < count:
                # (k_j,) . (k_j, R, C, B_j) -> (R, C, B_j): this slot's steps in the window
                g = hist[first:count:nb, :, :, : hi - lo]
                ut[:, :, lo:hi] += torch.tensordot(coef[first:count:nb], g, dims=1)
        return scale

    t0 = 0  # steps done
    while t0 < steps_total:
        end = min(steps_total, t0 + k_hist, (t0 // resync + 1) * resync)
        for i in range(end - t0):
            step = t0 + i + 1
            j = (step - 1) % nb
            g = hist_views[i][j]
            # dLoss/dlogits * B = softmax - onehot (the 1/B goes into alpha)
            torch.sub(torch.softmax(train_views[j], dim=1), ys[j], out=g)
            logits.baddbmm_(g, grams[j], beta=decay, alpha=-alphas[j])
            if step % resync == 0 and step < steps_total:
                break  # the window ends here (end is this step)
            if s.eval_every == 1 or s.scored_step(step):
                scorer.add(step, test_view)
        scale = fold(t0, end - t0, scale)
        t0 = end
        if t0 % resync == 0 and t0 < steps_total:
            w0 = scale * (w0 + torch.bmm(ut, xr))
            ut.zero_()
            scale = 1.0
            torch.bmm(w0, zr.transpose(1, 2), out=logits)
            if s.scored_step(t0):
                scorer.add(t0, test_view)
        if s.progress is not None:
            s.progress(t0)
    w = scale * (w0 + torch.bmm(ut, xr))  # (R, C, d+1)
    return scorer.result(), w[:, :, :-1].contiguous().cpu(), w[:, :, -1].contiguous().cpu()


def _train_primal(s: _Setup) -> tuple[Tensor, Tensor, Tensor]:
    """Primal form: weights (R, C, d) updated by batched matmuls; test logits of the
    scored steps computed from snapshots of the weights, K steps per matmul."""
    x, tx, y, ty = s.x, s.tx, s.y, s.ty
    r, n = s.order.shape
    m, c, d = tx.shape[0], s.num_classes, x.shape[1]
    batches = s.batches()
    xb = [x[idx].contiguous() for idx in batches]  # (R, B_j, d)
    yb = [F.one_hot(y[idx], c).to(torch.float32) for idx in batches]  # (R, B_j, C)
    weight, bias = s.weight.clone(), s.bias.clone()

    k_chunk = max(1, min(s.iterations + 1, _CHUNK_BYTES // (4 * r * c * max(d, m))))
    w_buf = torch.empty(k_chunk, r, c, d, device=x.device)
    b_buf = torch.empty(k_chunk, r, c, device=x.device)
    buf_steps: list[int] = []
    acc = torch.full((s.iterations + 1, r), float("nan"), device=x.device)

    def flush() -> None:
        if buf_steps:
            k = len(buf_steps)
            scores = batched_accuracy(
                tx, ty, w_buf[:k].reshape(k * r, c, d), b_buf[:k].reshape(k * r, c)
            )
            acc[buf_steps] = scores.view(k, r)
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
        xj, yj = xb[j], yb[j]  # (R, B, d), (R, B, C)
        logits = torch.baddbmm(bias.unsqueeze(1), xj, weight.transpose(1, 2))  # (R, B, C)
        grad = torch.softmax(logits, dim=2).sub_(yj).div_(xj.shape[1])  # dLoss/dlogits
        # SGD with weight decay, as torch.optim.SGD: p <- p - lr * (g + wd * p)
        weight.baddbmm_(grad.transpose(1, 2), xj, beta=s.decay, alpha=-s.lr)
        bias.mul_(s.decay).sub_(grad.sum(dim=1), alpha=s.lr)
        step = t + 1
        if s.scored_step(step):
            snapshot(step)
        s.tick(step)
    flush()
    return acc.T.contiguous().cpu(), weight.cpu(), bias.cpu()
