"""The torchvision engine: train Mask R-CNN from one backbone, evaluate, checkpoint, resume.

Plain PyTorch in the style of torchvision's `references/detection`, with detectron2's
schedule: SGD (momentum 0.9, weight decay 1e-4, none on norm parameters), linear warm-up
from 0.001 x lr over `warmup_iters`, then a constant lr (the reference removed the decay
steps), evaluation every `eval_period` iterations and after the last one.

The loop: build -> restore -> for each iteration: train_step -> maybe evaluate and
checkpoint. `runs/<name>/last.pt` is the shared training envelope (training.state, kind
"tempo-segment"): the run's settings, the iteration and the running loss of the evaluation
period, the whole model, the optimiser, the RNG of Python, NumPy, torch and CUDA (the RPN
and ROI samplers draw from torch's), and as payload the model spec, category ids,
backbone, evaluations and training time. Data order and flips depend only on (seed,
iteration) (segment.batches), so a resumed run repeats the uninterrupted one exactly.
SIGINT/SIGTERM stop between iterations (training.stop): last.pt is written, exit 130.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempo_cli import places
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import seed_everything
from tempo_cli.segment.batches import BatchSchedule, SegmentData, make_batch, make_data
from tempo_cli.segment.evaluation import Evaluation, evaluate, iterations_to_fraction
from tempo_cli.segment.model import ModelSpec, build_maskrcnn, parameter_groups
from tempo_cli.segment.plots import ap_figure, predictions_figure
from tempo_cli.settings.segment import SegmentSettings
from tempo_cli.training.state import TrainingState, load_state, save_state
from tempo_cli.training.step_log import (
    StepLogger,
    finite_weights,
    nonfinite_error,
    readback_every,
)
from tempo_cli.training.stop import StopRequest

if TYPE_CHECKING:
    from tempo_cli.segment.engines import SegmentJob

KIND = "tempo-segment"
WARMUP_FACTOR = 0.001  # detectron2 SOLVER.WARMUP_FACTOR (linear warm-up)
_HINT = "give runs/<name>/last.pt of a segment run; to start from a backbone use --path"


def lr_at(iteration: int, base_lr: float, warmup_iters: int) -> float:
    """detectron2's WarmupMultiStepLR without steps: linear warm-up, then constant."""
    if iteration >= warmup_iters or warmup_iters == 0:
        return base_lr
    alpha = iteration / warmup_iters
    return base_lr * (WARMUP_FACTOR * (1 - alpha) + alpha)


def auto_freezing(settings: SegmentSettings, path: str) -> tuple[int, bool]:
    """(trainable ResNet stages, FrozenBatchNorm) of `--trainable-layers` / `--norm` auto:
    3 and frozen for a trained backbone, 5 and trainable BatchNorm for `--path random`
    (frozen identity statistics would blow activations up)."""
    is_random = places.is_named_baseline(path) and path == "random"
    trainable = settings.trainable_layers
    if trainable is None:
        trainable = 5 if is_random else 3
    return trainable, {"frozen": True, "batch": False}.get(settings.norm, not is_random)


@dataclass
class Position:
    """Where training stands: iterations done and the loss sum of the open eval period."""

    iteration: int = 0
    period_loss_sum: float = 0.0
    period_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "period_loss_sum": self.period_loss_sum,
            "period_steps": self.period_steps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Position:
        return cls(int(d["iteration"]), float(d["period_loss_sum"]), int(d["period_steps"]))


class TorchvisionEngine:
    """`--engine torchvision` (built in)."""

    name = "torchvision"

    def available(self) -> bool:
        return True

    def require(self) -> None:
        """Always available: torchvision is a dependency."""

    def restore(self, resume: Path) -> tuple[dict[str, Any], TrainingState]:
        """(the run's saved settings, its training state) of `--resume` (last.pt)."""
        state = load_state(resume, KIND, hint=_HINT)
        return state.settings, state

    def train(self, job: SegmentJob, resumed: TrainingState | None) -> dict[str, Any]:
        """Train and evaluate from backbone `job.path` (or continue `resumed`); its record."""
        settings, path, train_split, root = job.settings, job.path, job.train_split, job.root
        from tempo_cli.segment.core import backbone_state

        data = make_data(
            root, train_split, job.test_split, settings.train_images, settings.eval_images
        )
        if resumed is not None:
            saved_ids = resumed.payload["category_ids"]
            if saved_ids != train_split.category_ids:
                raise TempoError(
                    f"{settings.resume} was trained on {len(saved_ids)} categories, {root} has "
                    f"{len(train_split.category_ids)}; use the same --data"
                )
            saved = dict(resumed.payload["model_spec"])
            # Options that change speed, not the weights, follow the command line when given.
            for key in ("image_size", "roi_batch_size", "proposals"):
                if key in settings.model_fields_set:
                    saved[key] = getattr(settings, key)
            spec, body_state = ModelSpec(**saved), None
        else:
            arch, body_state = backbone_state(path, settings.backbone)
            if arch not in ("resnet18", "resnet34", "resnet50"):
                raise TempoError(f"{path}: a {arch} backbone; Mask R-CNN takes ResNet-18/34/50")
            trainable, frozen_bn = auto_freezing(settings, path)
            spec = ModelSpec(
                arch=arch,
                num_classes=train_split.num_classes,
                image_size=settings.image_size,
                trainable_layers=trainable,
                frozen_bn=frozen_bn,
                roi_batch_size=settings.roi_batch_size,
                proposals=settings.proposals,
            )
            # Seeded again after the backbone is read (`random` draws from the RNG): the FPN
            # and the heads then start identical for every backbone of a comparison.
            seed_everything(settings.seed)
        return train_backbone(
            settings, data, job.run_dir, job.device, backbone=path, body_state=body_state,
            spec=spec, resume=resumed,
        )  # fmt: skip


ENGINE = TorchvisionEngine()


def train_backbone(
    settings: SegmentSettings,
    data: SegmentData,
    run_dir: RunDir,
    device: torch.device,
    *,
    backbone: str,
    body_state: dict[str, torch.Tensor] | None,
    spec: ModelSpec,
    resume: TrainingState | None = None,
) -> dict[str, Any]:
    """Train one Mask R-CNN and return its record:
    {checkpoint, evals, iterations_to_90pct_final_segm_AP, final, last_checkpoint}.

    `body_state` initialises the ResNet body (ignored when `resume` is given: the
    checkpoint's full model state is loaded instead). Raises Interrupted (exit 130) after
    saving last.pt when SIGINT/SIGTERM arrives.
    """
    run = _Run(settings, data, run_dir, device, backbone, spec)
    run.build(None if resume else body_state)
    run.restore(resume)
    run.loop()
    return run.finish()


class _Run:
    """One torchvision Mask R-CNN training run."""

    def __init__(
        self,
        settings: SegmentSettings,
        data: SegmentData,
        run_dir: RunDir,
        device: torch.device,
        backbone: str,
        spec: ModelSpec,
    ) -> None:
        self.s, self.data, self.run_dir, self.device = settings, data, run_dir, device
        self.backbone, self.spec = backbone, spec
        self.ckpt_path = run_dir.path / "last.pt"
        self.pos = Position()
        self.evals: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.tb = run_dir.tensorboard()

    def build(self, body_state: dict[str, torch.Tensor] | None) -> None:
        s = self.s
        model = build_maskrcnn(self.spec, body_state, source=self.backbone).to(self.device)
        self.model = model
        self.optimizer = torch.optim.SGD(
            parameter_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum
        )
        self.schedule = BatchSchedule(len(self.data.train), s.batch_size, s.seed, s.augment)

    def restore(self, state: TrainingState | None) -> None:
        if state is None:
            return
        state.restore(model=self.model, optimizer=self.optimizer)
        self.pos = Position.from_dict(state.position)
        self.evals = list(state.payload.get("evals", []))
        self.train_seconds = float(state.payload.get("train_seconds", 0.0))
        log(f"resuming from iteration {self.pos.iteration}", self.s.quiet)

    def train_step(self, it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """One SGD step on iteration `it`'s batch -> (total loss, its parts, lr)."""
        lr = lr_at(it, self.s.lr, self.s.warmup_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, targets = make_batch(self.data.train, self.schedule, it, self.device)
        loss_dict = self.model(images, targets)
        loss = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, loss_dict, lr

    def loop(self) -> None:
        s, pos = self.s, self.pos
        steps = StepLogger(
            self.tb,
            total=s.max_iter,
            description=f"segment {self.backbone}",
            quiet=s.quiet,
            every=readback_every(self.device),
            done=pos.iteration,
            tag="loss/total",
        )
        with StopRequest() as stop, steps:
            while pos.iteration < s.max_iter:
                t0 = time.perf_counter()
                loss, parts, lr = self.train_step(pos.iteration)
                self.train_seconds += time.perf_counter() - t0
                pos.iteration += 1
                scalars = {f"loss/{k}": v for k, v in parts.items()}
                due = steps.add(pos.iteration, loss, **scalars, lr=lr)
                at_eval = pos.iteration % s.eval_period == 0 or pos.iteration == s.max_iter
                stopping = stop.requested  # read once: a later signal waits for the next step
                if due or at_eval or stopping:
                    self._flush(steps)
                steps.advance(lr=lr)
                if at_eval:
                    self._evaluate()
                if stopping:
                    if not at_eval:
                        self._checkpoint()
                    raise Interrupted(
                        f"{stop.signal_name} received at iteration {pos.iteration}; resumable "
                        f"checkpoint saved: continue with `tempo segment --resume "
                        f"{self.ckpt_path}`"
                    )

    def _hint(self) -> str:
        """The end of the non-finite loss error: what is kept, what to do."""
        where = (
            f"the last good checkpoint is {self.ckpt_path}"
            if self.ckpt_path.is_file()
            else "no checkpoint was saved yet"
        )
        return f"{where} ({self.backbone}); lower --lr or raise --warmup-iters"

    def _flush(self, steps: StepLogger) -> None:
        rows = steps.flush(self._hint())
        for r in rows:
            self.pos.period_loss_sum += r.loss
            self.pos.period_steps += 1

    def _evaluate(self) -> None:
        """Evaluate at the training threshold, record, checkpoint (the period closes)."""
        s, pos, it = self.s, self.pos, self.pos.iteration
        result = self.evaluate(s.eval_score_thresh)
        mean_loss = pos.period_loss_sum / pos.period_steps
        pos.period_loss_sum, pos.period_steps = 0.0, 0
        record = _eval_record(it, result.metrics, mean_loss, self.train_seconds)
        self.evals.append(record)
        if self.tb is not None:
            for key in ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50"):
                if record[key] is not None:
                    self.tb.add_scalar(f"AP/{key}", record[key], it)
            self.tb.flush()
        self._checkpoint()
        self.run_dir.update_metrics(evals=self.evals)
        log(
            f"[{self.backbone}] iteration {it}/{s.max_iter}: loss {mean_loss:.4f}"
            f"  bbox AP {_fmt(record['bbox_AP'])}  segm AP {_fmt(record['segm_AP'])}"
            f"  ({result.detections} detections)",
            s.quiet,
        )

    def _checkpoint(self) -> None:
        """last.pt (atomic) at the current position, unless the weights went non-finite."""
        if not finite_weights(self.model):
            raise nonfinite_error(self.pos.iteration, self._hint())
        state = TrainingState.capture(
            KIND,
            # The run's own backbone: a comparison's sub-run resumes alone.
            settings=self.s.model_copy(update={"path": [self.backbone]}),
            position=self.pos.to_dict(),
            model=self.model,
            optimizer=self.optimizer,
            payload=self.payload(),
        )
        save_state(self.ckpt_path, state)

    def payload(self) -> dict[str, Any]:
        """What last.pt keeps beside the envelope's fields (an engine may add to it)."""
        return {
            "model_spec": self.spec.to_dict(),
            "category_ids": list(self.data.train_split.category_ids),
            "backbone": self.backbone,
            "evals": self.evals,
            "train_seconds": self.train_seconds,
        }

    def evaluate(self, score_thresh: float, keep_predictions: int = 0) -> Evaluation:
        """The test images scored at `score_thresh` (the detectron2 engine overrides this)."""
        return evaluate(
            self.model, self.data.test, self.device, score_thresh,
            batch_size=self.s.batch_size, keep_predictions=keep_predictions,
        )  # fmt: skip

    def finish(self) -> dict[str, Any]:
        """Final evaluation at the reference's test threshold (0.7), with a few drawings;
        the run's record (also merged into metrics.json)."""
        s, data, it, tb = self.s, self.data, self.pos.iteration, self.tb
        final = self.evaluate(s.score_thresh, keep_predictions=s.vis_images)
        final_record = {
            "iteration": it,
            "score_thresh": s.score_thresh,
            **final.metrics,
            "detections": final.detections,
        }
        if tb is not None:
            for key in ("bbox_AP", "segm_AP"):
                if final.metrics.get(key) is not None:
                    tb.add_scalar(f"AP_final/{key}", final.metrics[key], it)
            tb.flush()
        record = {
            "checkpoint": self.backbone,
            "evals": self.evals,
            "iterations_to_90pct_final_segm_AP": iterations_to_fraction(self.evals, 0.9),
            "final": final_record,
            "train_seconds": round(self.train_seconds, 3),
            "last_checkpoint": str(self.ckpt_path),
        }
        self.run_dir.update_metrics(**record)
        if self.evals:
            fig = ap_figure(self.evals, f"Mask R-CNN from {self.backbone}")
            self.run_dir.save_figure(fig, "ap.png")
        if s.vis_images and final.predictions:
            images = [data.test[i][0] for i in range(len(final.predictions))]
            fig = predictions_figure(
                images, final.predictions, data.test_split.category_names, s.score_thresh
            )
            self.run_dir.save_figure(fig, "predictions.png")
        log(
            f"[{self.backbone}] final (score >= {s.score_thresh:g}): bbox AP "
            f"{_fmt(final.metrics.get('bbox_AP'))}  segm AP {_fmt(final.metrics.get('segm_AP'))}",
            s.quiet,
        )
        return record


def _eval_record(
    iteration: int, metrics: dict[str, Any], loss: float | None, seconds: float
) -> dict[str, Any]:
    return {
        "iteration": iteration,
        "bbox_AP": metrics.get("bbox_AP"),
        "segm_AP": metrics.get("segm_AP"),
        "bbox_AP50": metrics.get("bbox_AP50"),
        "segm_AP50": metrics.get("segm_AP50"),
        "loss": loss,
        "train_seconds": round(seconds, 3),
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
