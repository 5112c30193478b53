"""Linear probes on frozen features: every run of a setting trained at once.

The reference protocol (SPEC.md) trains R fresh `Linear(d, C)` heads one after the other,
each with its own shuffled batches of 24 training features, cycled for 3,000 SGD steps
(lr 0.01, weight decay 1e-4, cross-entropy; the `eval linear` defaults, given here as a
`ProbeConfig`), and measures test accuracy before the first step and after every step.
Here the R heads are one tensor `weight (R, C, d)`:

- one step updates all heads with the closed-form cross-entropy gradient
  `(softmax - onehot) / B` (no autograd, no optimiser object: at these sizes they cost
  more than the arithmetic);
- "kernel" form (few-shot splits; `probe_kernel`): the logits of every train and test
  item are kept up to date through the Gram matrix, so a step costs (N+M) x B x C per run
  and test accuracy is an argmax over logits already there;
- "primal" form (large splits; `probe_primal`): weights (R, C, d) updated by `bmm`, the
  test logits of K consecutive steps computed by one matmul.

Both forms train from one `probe_setup.ProbeSetup` (the features, batch orders and
initial heads on the device); this module draws the runs, picks the form and splits the
trained heads into one `ProbeResult` per lr.

Each run draws its batch order and its head initialisation from its own generator
(`run_generator(seed, run)`), exactly as `tempo_cli.evaluate.reference` does one run at a
time, so the batched probe reproduces the sequential protocol to float tolerance
(tests/test_eval_probe.py).

`train_probe_grid` trains R runs for each of L learning rates in the same pass: H = R*L
heads, run-major (head r*L + l), laid out (R, L*C, ...) so that one `bmm` over the R runs
serves every lr (the kernel form's Gram blocks depend on the run only); lr l uses run r's
batches and initial head, so each lr's result equals a separate probe at that lr. The
final heads may be scored on a validation split (the run, and with `select_lr` the lr,
are then chosen on it), and each run may train on its own subset of the training items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.predictions import head_predictions
from tempo_cli.evaluate.probe_kernel import train_kernel
from tempo_cli.evaluate.probe_primal import train_primal
from tempo_cli.evaluate.probe_setup import ProbeSetup, batched_accuracy

__all__ = [
    "ProbeResult",
    "batch_order",
    "batched_accuracy",
    "init_head",
    "pick_best_run",
    "run_generator",
    "run_setup",
    "select_lr",
    "train_linear_probes",
    "train_probe_grid",
]


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
    """The outcome of R linear probes trained together at one learning rate.

    accuracy: (R, T+1) test accuracy after 0, 1, ..., T steps (step 0 = the fresh head,
        as the reference measures before its first step).
    weight: (R, C, d), bias: (R, C): the heads after T steps.
    best_run: the selected run (`pick_best_run`: on val when scored, else on test).
    lr: the learning rate these R heads were trained with.
    val_accuracy: (R,) accuracy of the final heads on the validation split, or None when
        no validation split was given.
    test_pred / val_pred: (R, M) / (R, V) the classes the final heads predict on test /
        val (`predictions.head_predictions`), or None.
    """

    accuracy: Tensor
    weight: Tensor
    bias: Tensor
    best_run: int
    lr: float
    val_accuracy: Tensor | None = None
    test_pred: Tensor | None = None
    val_pred: Tensor | None = None

    @property
    def selected_on(self) -> str:
        """The split `best_run` (and an lr choice) was selected on: "val" or "test"."""
        return "val" if self.val_accuracy is not None else "test"

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


def pick_best_run(accuracy: Tensor, val_accuracy: Tensor | None = None) -> int:
    """The run to keep.

    Args:
        accuracy: (R, T+1) test curves; val_accuracy: (R,) final val accuracies or None.
    Returns:
        with val: the run with the highest val accuracy (ties: the lowest run index; the
        test curves are not looked at). Without: the highest final test accuracy, ties
        broken by the highest best test accuracy.
    """
    if val_accuracy is not None:
        top = val_accuracy.max()
        return int(torch.nonzero(val_accuracy == top)[0, 0])
    final = accuracy[:, -1]
    best = accuracy.max(dim=1).values
    score = final * 2.0 + best * 1e-3  # final dominates; accuracies lie in [0, 1]
    return int(score.argmax())


def select_lr(results: Sequence[ProbeResult]) -> int:
    """Index of the best lr of a grid (`train_probe_grid`'s results, one per lr).

    Score: the mean over runs of the final val accuracy when every result scored a val
    split, else of the final test accuracy. Ties: the earlier lr in the list.
    """
    if not results:
        raise ValueError("select_lr needs at least one ProbeResult")
    on_val = all(res.val_accuracy is not None for res in results)
    best, best_score = 0, -math.inf
    for i, res in enumerate(results):
        acc = res.val_accuracy if on_val and res.val_accuracy is not None else res.accuracy[:, -1]
        score = float(acc.double().mean())
        if score > best_score:
            best, best_score = i, score
    return best


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
    val: tuple[Tensor, Tensor] | None = None,
    subsets: Sequence[Tensor] | None = None,
) -> ProbeResult:
    """Train `config.runs` linear probes at `config.lr` at once; score every one on test.

    `train_probe_grid` with the single lr `config.lr` (see there for the arguments).

    Returns:
        ProbeResult with accuracy (R, T+1), weight (R, C, d), bias (R, C).
    """
    args = (train_x, train_y, test_x, test_y, num_classes, config, [float(config.lr)])
    return train_probe_grid(
        *args,
        device=device,
        progress=progress,
        method=method,
        first_run=first_run,
        val=val,
        subsets=subsets,
    )[0]


@torch.no_grad()
def train_probe_grid(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    config: ProbeConfig,
    lrs: Sequence[float],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    method: str = "auto",
    first_run: int = 0,
    val: tuple[Tensor, Tensor] | None = None,
    subsets: Sequence[Tensor] | None = None,
) -> list[ProbeResult]:
    """Train `config.runs` probes for every lr of `lrs`, all L x R heads in ONE batched pass.

    Args:
        train_x: (N, d) float features; train_y: (N,) long labels in [0, C).
        test_x: (M, d) float features; test_y: (M,) long labels.
        num_classes: C.
        config: runs R (run r seeded by `run_generator(config.seed, first_run + r)`: the
            same batch order and initial head for every lr), iterations T (batches of
            `batch_size` cycle through one shuffled pass over the training items, per run,
            as the reference), weight_decay (plain SGD, decay on weight and bias as torch's
            SGD: factor 1 - lr * wd per step), eval_every K (score every K steps; unscored
            columns repeat the last score). `config.lr` is ignored: `lrs` is the grid.
            `bn_stats` does not apply (features given).
        lrs: L learning rates.
        progress: optional callable(steps_done) for a progress bar.
        method: "kernel" (logits kept up to date through the Gram matrix; fastest when
            N is small, the few-shot case), "primal" (weights updated, test scored by
            deferred matmuls) or "auto" (kernel when its Gram blocks and logits fit in
            256 MiB).
        first_run: the index of the first run (runs first_run .. first_run + R - 1 are
            trained: `--bn-stats batch` trains each run on features of its own).
        val: optional (val_x (V, d), val_y (V,)): the final heads are scored on it, and
            each lr's best run is selected on it.
        subsets: optional R LongTensors (n_sub,) of indices into train_x, all the same
            length: run r trains on train_x[subsets[r]] only, its batch order drawn over
            n_sub items (`subsets[r][randperm(n_sub)]`).
    Returns:
        One ProbeResult per lr, in the order of `lrs`: accuracy (R, T+1), weight (R, C, d),
        bias (R, C), val_accuracy (R,) when `val` is given.
    """
    device = torch.device(device)
    lrs = [float(lr) for lr in lrs]
    r, batch_size = int(config.runs), int(config.batch_size)
    if not lrs:
        raise ValueError("train_probe_grid needs at least one lr")
    order, weight, bias = _run_heads(train_x, num_classes, config, first_run, subsets)
    n, m = order.shape[1], test_x.shape[0]
    if n == 0 or m == 0:
        raise ValueError("empty training or test features")
    method = _choose_method(method, r, len(lrs), n, m, int(num_classes))
    lc = len(lrs) * int(num_classes)
    setup = ProbeSetup(
        x=train_x.to(device=device, dtype=torch.float32),
        y=train_y.to(device),
        tx=test_x.to(device=device, dtype=torch.float32),
        ty=test_y.to(device),
        order=order.to(device),  # (R, n_sub)
        # every lr starts from its run's head: (R, C, d) -> (R, L*C, d)
        weight=weight.to(device).repeat_interleave(len(lrs), dim=0).view(r, lc, -1),
        bias=bias.to(device).repeat_interleave(len(lrs), dim=0).view(r, lc),
        num_classes=int(num_classes),
        iterations=int(config.iterations),
        batch_size=batch_size,
        lrs=lrs,
        weight_decay=float(config.weight_decay),
        eval_every=int(config.eval_every),
        progress=progress,
    )
    run_fn = train_kernel if method == "kernel" else train_primal
    accuracy, weight, bias = run_fn(setup)  # (H, T+1), (R, L*C, d), (R, L*C); H = R*L
    return _split_by_lr(setup, _fill_unscored(accuracy), weight, bias, val)


def _run_heads(
    train_x: Tensor,
    num_classes: int,
    config: ProbeConfig,
    first_run: int,
    subsets: Sequence[Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch orders (R, n_sub) as indices into train_x, initial weights (R, C, d) and
    biases (R, C) of runs first_run .. first_run + R - 1 (CPU)."""
    n, d = train_x.shape
    r = int(config.runs)
    if subsets is not None:
        sizes = {int(idx.numel()) for idx in subsets}
        if len(subsets) != r or len(sizes) != 1:
            raise ValueError(f"subsets: need {r} index tensors of one length, got {len(subsets)}")
    orders, weights, biases = [], [], []
    for run in range(r):
        n_run = n if subsets is None else int(subsets[run].numel())
        args = (num_classes, d, int(config.batch_size), config.seed, first_run + run)
        order, w0, b0 = run_setup(n_run, *args)
        if subsets is not None:
            order = subsets[run].to(device="cpu", dtype=torch.long).reshape(-1)[order]
            if order.numel() and (int(order.min()) < 0 or int(order.max()) >= n):
                raise ValueError(f"subsets[{run}]: indices outside [0, {n})")
        orders.append(order)
        weights.append(w0)
        biases.append(b0)
    return torch.stack(orders), torch.stack(weights), torch.stack(biases)


def _choose_method(method: str, r: int, n_lr: int, n: int, m: int, c: int) -> str:
    """The training form: "kernel" or "primal" as asked; "auto" = kernel when its Gram
    blocks (R, N, N+M: shared by the lrs) and its logits and dual weights (R*L, C, 2N+M)
    fit in 256 MiB."""
    if method == "auto":
        kernel_bytes = 4 * (r * (n + m) * n + r * n_lr * c * (2 * n + m))
        method = "kernel" if kernel_bytes <= 256 * 2**20 else "primal"
    if method not in ("kernel", "primal"):
        raise ValueError(f"unknown method {method!r}")
    return method


def _fill_unscored(accuracy: Tensor) -> Tensor:
    """(H, T+1) with NaN at unscored steps (eval_every > 1) -> each repeats the last score."""
    scored = ~torch.isnan(accuracy[0])
    if bool(scored.all()):
        return accuracy
    idx = torch.where(scored, torch.arange(accuracy.shape[1]), 0).cummax(dim=0).values
    return accuracy[:, idx]


def _split_by_lr(
    s: ProbeSetup, accuracy: Tensor, weight: Tensor, bias: Tensor, val: tuple[Tensor, Tensor] | None
) -> list[ProbeResult]:
    """Heads are ordered run-major (head r*L + l = run r, lr l): one ProbeResult per lr.

    accuracy: (R*L, T+1) on CPU; weight: (R, L*C, d), bias: (R, L*C) on the device.
    """
    r, n_lr, c = s.order.shape[0], s.n_lr, s.num_classes
    d = weight.shape[2]
    val_acc = val_pred = None
    all_w, all_b = weight.view(r * n_lr, c, d), bias.view(r * n_lr, c)
    test_pred = head_predictions(s.tx, all_w, all_b).view(r, n_lr, -1)  # per-image, kept
    if val is not None:
        vx = val[0].to(device=weight.device, dtype=torch.float32)
        vy = val[1].to(weight.device)
        heads = batched_accuracy(vx, vy, all_w, all_b)
        val_acc = heads.view(r, n_lr).cpu()
        val_pred = head_predictions(vx, all_w, all_b).view(r, n_lr, -1)
    acc = accuracy.view(r, n_lr, -1)
    w, b = weight.view(r, n_lr, c, d).cpu(), bias.view(r, n_lr, c).cpu()
    results = []
    for j, lr in enumerate(s.lrs):
        v = None if val_acc is None else val_acc[:, j].contiguous()
        a = acc[:, j].contiguous()
        results.append(
            ProbeResult(
                accuracy=a,
                weight=w[:, j].contiguous(),
                bias=b[:, j].contiguous(),
                best_run=pick_best_run(a, v),
                lr=lr,
                val_accuracy=v,
                test_pred=test_pred[:, j].contiguous(),
                val_pred=None if val_pred is None else val_pred[:, j].contiguous(),
            )
        )
    return results
