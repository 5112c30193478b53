"""The torchvision engine (`--engine torchvision`, built in): Mask R-CNN in plain PyTorch.

In the style of torchvision's `references/detection`, with detectron2's schedule: SGD
(momentum 0.9, weight decay 1e-4, none on norm parameters), linear warm-up from 0.001 x lr
over `warmup_iters`, then a constant lr (the reference removed the decay steps). The loop,
the evaluations, last.pt and `--resume` are segment.loop's, shared with the detectron2
engine; this module is the torchvision model, its SGD step and its pycocotools evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from tempo_cli.segment.batches import SegmentData, make_batch
from tempo_cli.segment.evaluation import Evaluation, evaluate
from tempo_cli.segment.loop import Body, SegmentEngine, SegmentJob, SegmentRun
from tempo_cli.segment.model import ModelSpec, build_maskrcnn, parameter_groups
from tempo_cli.settings.segment import SegmentSettings

WARMUP_FACTOR = 0.001  # detectron2 SOLVER.WARMUP_FACTOR (linear warm-up)
# Options that change speed, not the weights: a resumed run takes them from the command line.
_SPEED_OPTIONS = ("image_size", "roi_batch_size", "proposals")


def lr_at(iteration: int, base_lr: float, warmup_iters: int) -> float:
    """detectron2's WarmupMultiStepLR without steps: linear warm-up, then constant."""
    if iteration >= warmup_iters or warmup_iters == 0:
        return base_lr
    alpha = iteration / warmup_iters
    return base_lr * (WARMUP_FACTOR * (1 - alpha) + alpha)


class TorchvisionRun(SegmentRun[ModelSpec]):
    """One torchvision Mask R-CNN training run."""

    def build(self, body_state: dict[str, torch.Tensor] | None) -> None:
        s = self.s
        model = build_maskrcnn(self.spec, body_state, source=self.backbone).to(self.device)
        self.model = model
        self.optimizer = torch.optim.SGD(
            parameter_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum
        )

    def step(self, it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
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

    def evaluate(self, score_thresh: float, keep_predictions: int = 0) -> Evaluation:
        """The test images scored with pycocotools at `score_thresh`."""
        return evaluate(
            self.model, self.data.test, self.device, score_thresh,
            batch_size=self.s.batch_size, keep_predictions=keep_predictions,
        )  # fmt: skip


class TorchvisionEngine(SegmentEngine[ModelSpec]):
    """`--engine torchvision` (built in)."""

    name = "torchvision"

    def require(self) -> None:
        """Always available: torchvision is a dependency."""

    def new_spec(self, settings: SegmentSettings, body: Body) -> ModelSpec:
        return ModelSpec(
            arch=body.arch,
            num_classes=body.num_classes,
            image_size=settings.image_size,
            trainable_layers=body.trainable_layers,
            frozen_bn=body.frozen_bn,
            roi_batch_size=settings.roi_batch_size,
            proposals=settings.proposals,
        )

    def saved_spec(self, settings: SegmentSettings, saved: dict[str, Any]) -> ModelSpec:
        for key in _SPEED_OPTIONS:
            if key in settings.model_fields_set:
                saved[key] = getattr(settings, key)
        return ModelSpec(**saved)

    def make_run(self, job: SegmentJob, data: SegmentData, spec: ModelSpec) -> TorchvisionRun:
        return TorchvisionRun(job, data, spec)


ENGINE = TorchvisionEngine()
