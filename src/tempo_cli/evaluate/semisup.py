"""Semi-supervised evaluation (SPEC.md): fine-tune every parameter with a fresh linear head.

Per run: a fresh copy of the checkpoint's backbone, a fresh `Linear(d, C)` (initialised
from the run's generator, as the linear probe), SGD over all parameters, batches
reshuffled every pass, test accuracy before training and every `eval_every` iterations
(lr, batch size, iterations: `ProbeConfig` from the settings). `--bn-stats running` tests
in eval mode (the standard); `batch` keeps the model in train mode while testing, in
shuffled batches of 20 (`--bn-batch-size`'s TEST), reshuffled at every test pass as the
reference's shuffled test loader. `adapt` does not apply: fine-tuning trains BatchNorm.

The loop runs on the shared training infrastructure (`tempo_cli.training`): SIGINT and
SIGTERM stop it between steps (exit 130; results of finished splits stay in
metrics.json), and every loss is read back and checked to be finite.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from tempo_cli.errors import Interrupted, TempoError, UsageError
from tempo_cli.evaluate.batchnorm import (
    REFERENCE_SEMISUP_TEST_BATCH,
    BnBatches,
    BnMode,
    bn_mode,
    test_generator,
)
from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.linear_probe import init_head, run_generator
from tempo_cli.evaluate.predictions import Predictions
from tempo_cli.evaluate.protocol import EvalProtocol, Task
from tempo_cli.evaluate.results import CurveResult, steps_tensor
from tempo_cli.settings.evaluate import EvalSemisupSettings
from tempo_cli.training.step_log import StepLogger, readback_every
from tempo_cli.training.stop import StopRequest

NONFINITE_HINT = "no result was written for this split; lower --lr and try again"
SEMISUP_BN_STATS = (
    "semisup takes running or batch; adapt is for eval linear, eval knn and pretrain --eval"
)


@dataclass
class Images:
    """A labelled split in memory: uint8 images (N, 3, S, S), labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor | None) -> Images:
        """The images at `index` (LongTensor (n,)); None: all of them (self)."""
        return self if index is None else Images(self.images[index], self.labels[index])


@dataclass(frozen=True)
class BnScoring:
    """How a split is scored: the BatchNorm mode and its batch sizes."""

    mode: BnMode
    batches: BnBatches

    def test_pass(self, g: torch.Generator) -> _TestPass:
        """One run's scoring, drawing its shuffled orders from `g`."""
        return _TestPass(self.mode, self.batches, g)


@dataclass
class _TestPass:
    """How the test split is scored: the BatchNorm mode, its batch sizes, and the run's
    test generator (each pass of a shuffling mode draws a new order from it)."""

    mode: BnMode
    batches: BnBatches
    g: torch.Generator


@torch.no_grad()
def _predict(model: nn.Module, test: Images, device: torch.device, how: _TestPass) -> Tensor:
    """(M,) the classes `model` predicts for the images of `test`, in their order (in
    train mode while testing when the mode says so)."""
    from tempo_cli.data.transforms import normalize_uint8

    was_training = model.training
    model.train(how.mode.test_in_train_mode)
    pred = torch.empty(len(test), dtype=torch.long)
    for idx in how.mode.test_blocks(len(test), how.batches, how.g):
        pred[idx] = model(normalize_uint8(test.images[idx].to(device))).argmax(dim=1).cpu()
    model.train(was_training)
    return pred


def _share(pred: Tensor, test: Images) -> float:
    """The accuracy of predictions `pred` (M,) on `test`."""
    return int((pred == test.labels).sum()) / len(test)


def _accuracy(model: nn.Module, test: Images, device: torch.device, how: _TestPass) -> float:
    """Test accuracy of `model` (in train mode while testing when the mode says so)."""
    return _share(_predict(model, test, device, how), test)


def _fresh_classifier(
    backbone: nn.Module, feature_dim: int, num_classes: int, g: torch.Generator
) -> nn.Module:
    """A copy of `backbone` with a fresh head drawn from the run's generator `g`."""
    from tempo_cli.models.classifier import Classifier

    w0, b0 = init_head(num_classes, feature_dim, g)
    linear = nn.Linear(feature_dim, num_classes)
    with torch.no_grad():
        linear.weight.copy_(w0)
        linear.bias.copy_(b0)
    return Classifier(copy.deepcopy(backbone), linear)


def _train_step(
    model: nn.Module, opt: torch.optim.Optimizer, train: Images, idx: Tensor, device: torch.device
) -> Tensor:
    """One SGD step on the images `idx`; the loss (0-d, on the device)."""
    from tempo_cli.data.transforms import normalize_uint8

    x = normalize_uint8(train.images[idx].to(device))
    y = train.labels[idx].to(device)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


@dataclass(frozen=True)
class FinetuneData:
    """What every run of one split fine-tunes and is scored on."""

    backbone: nn.Module  # copied per run, never modified
    feature_dim: int
    num_classes: int
    train: Images
    test: Images
    subsets: list[Tensor] | None = None  # run r trains on train.take(subsets[r])
    val: Images | None = None

    def train_of(self, r: int) -> Images:
        return self.train.take(None if self.subsets is None else self.subsets[r])


@dataclass
class _Finetuning:
    """What every run of one split shares; `run(r)` fine-tunes run r."""

    data: FinetuneData
    config: ProbeConfig
    steps: Tensor  # (S,) the steps at which test accuracy is measured
    device: torch.device
    scoring: BnScoring
    log: StepLogger
    stop: StopRequest

    def run(self, r: int) -> tuple[Tensor, nn.Module, float | None, Predictions]:
        """Run r: its test accuracies (S,) at `steps`, its fine-tuned model, its final
        accuracy on `val` (None without val) and its final per-image predictions.

        The run's generator draws its first shuffled pass, then the head, then each
        later pass (as a shuffled DataLoader). Loss steps continue across runs.
        """
        c, d = self.config, self.data
        train = d.train_of(r)
        g = run_generator(c.seed, r)
        order = torch.randperm(len(train), generator=g)
        model = _fresh_classifier(d.backbone, d.feature_dim, d.num_classes, g)
        model = model.to(self.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        how = self.scoring.test_pass(test_generator(c.seed, r))
        acc = torch.zeros(len(self.steps))
        pred = _predict(model, d.test, self.device, how)
        acc[0] = _share(pred, d.test)
        col, pos, n = 1, 0, len(train)
        for it in range(1, c.iterations + 1):
            if pos >= n:  # a new pass: reshuffle
                order, pos = torch.randperm(n, generator=g), 0
            loss = _train_step(model, opt, train, order[pos : pos + c.batch_size], self.device)
            pos += c.batch_size
            if col < len(self.steps) and it == int(self.steps[col]):
                pred = _predict(model, d.test, self.device, how)
                acc[col] = _share(pred, d.test)
                col += 1
            if self.log.add(r * c.iterations + it, loss):
                self.log.flush(NONFINITE_HINT)
            self.log.advance()
            if self.stop.requested:
                raise Interrupted(
                    f"{self.stop.signal_name or 'stop'} received at step {it} of run {r + 1}; "
                    "fine-tuning stopped (results of finished splits are in metrics.json)"
                )
        self.log.flush(NONFINITE_HINT)
        val, kept = None, Predictions(pred.view(1, -1), d.test.labels)
        if d.val is not None:  # scored like test, with a generator of its own
            how = self.scoring.test_pass(test_generator(c.seed + 1, r))
            val_pred = _predict(model, d.val, self.device, how)
            val = _share(val_pred, d.val)
            kept.val, kept.val_labels = val_pred.view(1, -1), d.val.labels
        return acc, model, val, kept


@dataclass
class _BestRun:
    """The best run so far: its final (val, else test) accuracy, index, backbone and head."""

    final: float
    run: int
    backbone_state: dict[str, Tensor]
    linear: nn.Linear


def finetune_curves(
    backbone: nn.Module,
    feature_dim: int,
    train: Images,
    test: Images,
    num_classes: int,
    config: ProbeConfig,
    *,
    checkpoint: str,
    samples_pc: int | None,
    device: torch.device | str = "cpu",
    description: str = "semisup",
    quiet: bool = True,
    subsets: list[Tensor] | None = None,
    val: Images | None = None,
) -> CurveResult:
    """Fine-tune `config.runs` copies of `backbone` + fresh heads; accuracy (runs, S).

    Args:
        backbone: (N, 3, H, W) -> (N, feature_dim); copied per run, never modified.
        train / test: uint8 images (N, 3, S, S) / (M, 3, S, S) with labels in [0, C).
        description, quiet: the progress bar's label, and whether to hide it.
        subsets: run r trains on `train.take(subsets[r])` (None: all of train).
        val: scored with each run's final model; the best run is then chosen on it.
    Returns:
        CurveResult with the best run's head and fine-tuned backbone state (best: the
        highest final val accuracy, else final test accuracy; ties: the first run).
    Raises:
        Interrupted after the current step on SIGINT/SIGTERM; TempoError on a nan/inf loss.
    """
    mode = bn_mode(config.bn_stats)
    if not mode.fine_tunes:
        raise UsageError("--bn-stats", mode.name, SEMISUP_BN_STATS)
    scoring = BnScoring(mode, semisup_batches(config))
    data = FinetuneData(backbone, feature_dim, num_classes, train, test, subsets, val)
    start = time.perf_counter()
    steps = steps_tensor(config.iterations, config.eval_every)
    acc = torch.zeros(config.runs, len(steps))
    val_acc = torch.zeros(config.runs)
    best: _BestRun | None = None
    dev = torch.device(device)
    total, every = config.runs * config.iterations, readback_every(dev)
    with (
        StopRequest() as stop,
        StepLogger(None, total=total, description=description, quiet=quiet, every=every) as log,
    ):
        job = _Finetuning(data, config, steps, dev, scoring, log, stop)
        kept = []
        for r in range(config.runs):
            acc[r], model, on_val, preds = job.run(r)
            kept.append(preds)
            final = float(acc[r, -1]) if on_val is None else on_val
            val_acc[r] = final
            if best is None or final > best.final:
                state = {
                    k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()
                }
                best = _BestRun(final, r, state, copy.deepcopy(model.linear).cpu())
    assert best is not None  # runs >= 1
    return CurveResult(
        protocol="semisup",
        checkpoint=checkpoint,
        samples_pc=samples_pc,
        accuracy=acc,
        steps=steps,
        best_run=best.run,
        linear=best.linear,
        backbone_state=best.backbone_state,
        seconds=time.perf_counter() - start,
        extra={
            "train_images": len(data.train_of(0)),
            "test_images": len(test),
            **mode.describe(scoring.batches),
        },
        lr=config.lr,
        val_accuracy=None if val is None else val_acc,
        predictions=_stack(kept),
    )


def _stack(runs: list[Predictions]) -> Predictions:
    """The runs' predictions (1, M) each as one (R, M)."""
    vals = [p.val for p in runs if p.val is not None]
    val = torch.cat(vals) if len(vals) == len(runs) else None
    return Predictions(
        torch.cat([p.test for p in runs]), runs[0].test_labels, val, runs[0].val_labels
    )


def semisup_batches(config: ProbeConfig) -> BnBatches:
    """`--bn-batch-size` of semisup: TEST = batch mode's test batches (20 by default);
    TRAIN is recorded only, the training batches being `--batch-size`."""
    return BnBatches.resolve(config.bn_batch_size, config.batch_size, REFERENCE_SEMISUP_TEST_BATCH)


class SemisupProtocol(EvalProtocol):
    """`tempo eval semisup`: decoded images, the whole network fine-tuned per run."""

    name = "semisup"
    settings_cls = EvalSemisupSettings

    def evaluate(self, task: Task) -> list[CurveResult]:
        model = task.checkpoint.model()
        train, test = task.images(task.split), task.images("test")
        val = task.images(task.val_split) if task.val_split else None
        for other in (test, val):
            if other is not None and train.class_names != other.class_names:
                raise TempoError(f"the splits of {task.root} list different classes")
        settings = cast(EvalSemisupSettings, task.settings)  # the registry pairs them
        config = ProbeConfig.from_settings(settings)
        res = finetune_curves(
            model.backbone,
            model.feature_dim,
            Images(train.images, train.labels),
            Images(test.images, test.labels),
            len(train.class_names),
            config,
            checkpoint=task.label,
            samples_pc=task.samples_pc,
            device=task.device,
            description=task.description(self.name),
            quiet=settings.quiet,
            subsets=task.labels.run_subsets(config.runs),
            val=None if val is None else Images(val.images, val.labels),
        )
        res.extra.update(task.labels.describe())
        return [res]
