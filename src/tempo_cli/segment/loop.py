"""The one Mask R-CNN training loop, and what both engines share around it.

An engine (`SegmentEngine`: torchvision in segment.train, detectron2 in
segment.detectron2_engine) trains one backbone of a job. `SegmentEngine.train` is written
once: the datasets (segment.batches), the `--resume` category check, the backbone and its
architecture, `auto_freezing`, then the engine's model spec and its `SegmentRun`. A run's
public hooks are the engine's part: `build` (model, optimiser, batch schedule), `step` (one
iteration), `evaluate` (AP at a score threshold), `payload` (what last.pt keeps besides
the envelope's fields) and `restore` (extended where an engine keeps more state).

The loop: build -> restore -> for each iteration: step -> maybe evaluate and checkpoint
(every `eval_period` iterations and after the last one) -> final evaluation. Schedule
(both engines): SGD with momentum 0.9, linear warm-up from 0.001 x lr over
`warmup_iters`, then a constant lr (the reference removed the decay steps).
`runs/<name>/last.pt` is the shared training envelope (training.state, kind
"tempo-segment"): the run's settings, the iteration and the running loss of the evaluation
period, the whole model, the optimiser, the RNG of Python, NumPy, torch and CUDA (the RPN
and ROI samplers draw from torch's), and as payload the model spec, category ids,
backbone, evaluations and training time. Data order and flips depend only on (seed,
iteration) (segment.batches), so a resumed run repeats the uninterrupted one exactly.
SIGINT/SIGTERM stop between iterations (training.stop): last.pt is written, exit 130.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from tempo_cli import places
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.report.progress import log
from tempo_cli.segment.batches import BatchSchedule, SegmentData, make_data
from tempo_cli.segment.evaluation import Evaluation, iterations_to_fraction
from tempo_cli.segment.model import DEPTHS
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
    from torch import nn

    from tempo_cli.data.coco import CocoSplit
    from tempo_cli.report.run_dir import RunDir

KIND = "tempo-segment"
RESUME_HINT = "give runs/<name>/last.pt of a segment run; to start from a backbone use --path"
_AP_KEYS = ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50")


class Spec(Protocol):
    """An engine's model spec: what rebuilds the same network (kept in last.pt)."""

    arch: str

    def to_dict(self) -> dict[str, Any]: ...


SpecT = TypeVar("SpecT", bound=Spec)


@dataclass
class SegmentJob:
    """One backbone's run: what every engine trains from and writes to."""

    settings: SegmentSettings
    path: str  # the backbone (`--path`): a checkpoint, random or imagenet
    root: Path  # the dataset folder (ASL_mask layout)
    train_split: CocoSplit
    test_split: CocoSplit
    run_dir: RunDir
    device: torch.device


@dataclass(frozen=True)
class Body:
    """A new run's backbone as both engines' specs take it."""

    arch: str
    num_classes: int  # object categories, without background
    trainable_layers: int
    frozen_bn: bool


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


class SegmentRun(ABC, Generic[SpecT]):
    """One Mask R-CNN training run: the loop, the evaluations, last.pt and the record.

    An engine subclasses it with `build`, `step` and `evaluate` (and may extend `payload`
    and `restore`); `train` runs the whole of it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, job: SegmentJob, data: SegmentData, spec: SpecT) -> None:
        self.s, self.data, self.run_dir, self.device = job.settings, data, job.run_dir, job.device
        self.backbone, self.spec = job.path, spec
        self.ckpt_path = job.run_dir.path / "last.pt"
        self.pos = Position()
        self.evals: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.tb = job.run_dir.tensorboard()
        s = job.settings
        self.schedule = BatchSchedule(len(data.train), s.batch_size, s.seed, s.augment)

    @abstractmethod
    def build(self, body_state: dict[str, torch.Tensor] | None) -> None:
        """Set `model` (its ResNet body from `body_state` when given) and `optimizer`
        (batches: `schedule`, a function of seed and iteration)."""

    @abstractmethod
    def step(self, it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """One SGD step on iteration `it`'s batch -> (total loss, its parts, lr)."""

    @abstractmethod
    def evaluate(self, score_thresh: float, keep_predictions: int = 0) -> Evaluation:
        """The test images scored at `score_thresh`; the first `keep_predictions` images'
        predictions in torchvision's form (for the figure)."""

    def payload(self) -> dict[str, Any]:
        """What last.pt keeps beside the envelope's fields (an engine may add to it)."""
        return {
            "model_spec": self.spec.to_dict(),
            "category_ids": list(self.data.train_split.category_ids),
            "backbone": self.backbone,
            "evals": self.evals,
            "train_seconds": self.train_seconds,
        }

    def restore(self, state: TrainingState | None) -> None:
        """Continue from `state` (None: a new run)."""
        if state is None:
            return
        state.restore(model=self.model, optimizer=self.optimizer)
        self.pos = Position.from_dict(state.position)
        self.evals = list(state.payload.get("evals", []))
        self.train_seconds = float(state.payload.get("train_seconds", 0.0))
        log(f"resuming from iteration {self.pos.iteration}", self.s.quiet)

    def train(
        self, body_state: dict[str, torch.Tensor] | None, resumed: TrainingState | None
    ) -> dict[str, Any]:
        """Build, restore, loop, finish: the run's record
        {checkpoint, evals, iterations_to_90pct_final_segm_AP, final, last_checkpoint}.

        `body_state` initialises the ResNet body of a new run. Raises Interrupted (exit 130)
        after saving last.pt when SIGINT/SIGTERM arrives.
        """
        self.build(None if resumed else body_state)
        self.restore(resumed)
        self.loop()
        return self.finish()

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
                loss, parts, lr = self.step(pos.iteration)
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
        record = {
            "iteration": it,
            **{key: result.metrics.get(key) for key in _AP_KEYS},
            "loss": mean_loss,
            "train_seconds": round(self.train_seconds, 3),
        }
        self.evals.append(record)
        if self.tb is not None:
            for key in _AP_KEYS:
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

    def finish(self) -> dict[str, Any]:
        """Final evaluation at the reference's test threshold (0.7), with a few drawings;
        the run's record (also merged into metrics.json)."""
        s, it, tb = self.s, self.pos.iteration, self.tb
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
        self._figures(final)
        log(
            f"[{self.backbone}] final (score >= {s.score_thresh:g}): bbox AP "
            f"{_fmt(final.metrics.get('bbox_AP'))}  segm AP {_fmt(final.metrics.get('segm_AP'))}",
            s.quiet,
        )
        return record

    def _figures(self, final: Evaluation) -> None:
        """ap.png (the evaluations) and predictions.png (the final's first test images)."""
        s, data = self.s, self.data
        if self.evals:
            fig = ap_figure(self.evals, f"Mask R-CNN from {self.backbone}")
            self.run_dir.save_figure(fig, "ap.png")
        if s.vis_images and final.predictions:
            images = [data.test[i][0] for i in range(len(final.predictions))]
            fig = predictions_figure(
                images, final.predictions, data.test_split.category_names, s.score_thresh
            )
            self.run_dir.save_figure(fig, "predictions.png")


class SegmentEngine(ABC, Generic[SpecT]):
    """A way to train Mask R-CNN (`--engine NAME`): its dependency check, its model spec
    and its `SegmentRun`; the preparation and `--resume` are shared."""

    name: str

    @abstractmethod
    def require(self) -> None:
        """One-line TempoError (what to install) unless the engine's dependencies import."""

    @abstractmethod
    def new_spec(self, settings: SegmentSettings, body: Body) -> SpecT:
        """The model spec of a new run from `body`."""

    @abstractmethod
    def saved_spec(self, settings: SegmentSettings, saved: dict[str, Any]) -> SpecT:
        """The model spec of a resumed run from last.pt's `model_spec`."""

    @abstractmethod
    def make_run(self, job: SegmentJob, data: SegmentData, spec: SpecT) -> SegmentRun[SpecT]:
        """The engine's run of `job` (built, restored and trained by `SegmentRun.train`)."""

    def session(self, job: SegmentJob) -> AbstractContextManager[object]:
        """What surrounds the run (detectron2: its log file); nothing by default."""
        return contextlib.nullcontext()

    def restore(self, resume: Path) -> tuple[dict[str, Any], TrainingState]:
        """(the run's saved settings, its training state) of `--resume` (last.pt)."""
        state = load_state(resume, KIND, hint=RESUME_HINT)
        return state.settings, state

    def train(self, job: SegmentJob, resumed: TrainingState | None) -> dict[str, Any]:
        """Train and evaluate from backbone `job.path` (or continue `resumed`); its record."""
        from tempo_cli.runtime import seed_everything
        from tempo_cli.segment.core import backbone_state

        self.require()
        s, split = job.settings, job.train_split
        data = make_data(job.root, split, job.test_split, s.train_images, s.eval_images)
        body_state = None
        if resumed is not None:
            saved_ids = resumed.payload["category_ids"]
            if saved_ids != split.category_ids:
                raise TempoError(
                    f"{s.resume} was trained on {len(saved_ids)} categories, {job.root} has "
                    f"{len(split.category_ids)}; use the same --data"
                )
            spec = self.saved_spec(s, dict(resumed.payload["model_spec"]))
        else:
            arch, body_state = backbone_state(job.path, s.backbone)
            if arch not in DEPTHS:
                raise TempoError(f"{job.path}: a {arch} backbone; Mask R-CNN takes ResNet-18/34/50")
            trainable, frozen_bn = auto_freezing(s, job.path)
            spec = self.new_spec(s, Body(arch, split.num_classes, trainable, frozen_bn))
            # Seeded again after the backbone is read (`random` draws from the RNG): the FPN
            # and the heads then start identical for every backbone of a comparison.
            seed_everything(s.seed)
        with self.session(job):
            return self.make_run(job, data, spec).train(body_state, resumed)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
