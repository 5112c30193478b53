"""The torchvision engine: train Mask R-CNN from one backbone, evaluate, checkpoint, resume.

Plain PyTorch in the style of torchvision's `references/detection`, with detectron2's
schedule: SGD (momentum 0.9, weight decay 1e-4, none on norm parameters), linear warm-up
from 0.001 x lr over `warmup_iters`, then a constant lr (the reference removed the decay
steps), evaluation every `eval_period` iterations and after the last one.

Data order and flips depend only on (seed, iteration), so a resumed run sees the same
batches as an uninterrupted one; the checkpoint also carries torch's RNG state (the RPN
and ROI samplers draw from it).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import atomic
from tempo_cli.data.coco import CocoInstances, CocoSplit
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.models.checkpoint import capture_rng_state, restore_rng_state
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.segment.evaluation import evaluate, iterations_to_fraction
from tempo_cli.segment.model import ModelSpec, build_maskrcnn, parameter_groups
from tempo_cli.segment.plots import ap_figure, predictions_figure
from tempo_cli.settings.segment import SegmentSettings

CHECKPOINT_FORMAT = "tempo-segment"
CHECKPOINT_VERSION = 1
WARMUP_FACTOR = 0.001  # detectron2 SOLVER.WARMUP_FACTOR (linear warm-up)


@dataclass
class SegmentData:
    """Validated train/test splits and the datasets the loop draws from."""

    root: Path
    train_split: CocoSplit
    test_split: CocoSplit
    train: CocoInstances  # annotated training images only (detectron2 filters empty ones)
    test: CocoInstances  # the evaluated test images (all, or the first --eval-images)


def make_data(
    root: Path,
    train_split: CocoSplit,
    test_split: CocoSplit,
    train_images: int | None,
    eval_images: int | None,
) -> SegmentData:
    """Datasets for the loop; TempoError if no training image has a usable instance."""
    full = CocoInstances(train_split)
    keep = full.annotated_indices()
    if not keep:
        raise TempoError(
            f"{train_split.json_path}: no training image has a usable (non-crowd, non-empty) "
            "instance"
        )
    ids = [full.image_ids[i] for i in keep]
    if train_images is not None:
        ids = ids[:train_images]
    test_ids = test_split.image_ids[:eval_images] if eval_images else test_split.image_ids
    return SegmentData(
        root=root,
        train_split=train_split,
        test_split=test_split,
        train=CocoInstances(train_split, ids),
        test=CocoInstances(test_split, test_ids),
    )


# --- schedule --------------------------------------------------------------------------


def lr_at(iteration: int, base_lr: float, warmup_iters: int) -> float:
    """detectron2's WarmupMultiStepLR without steps: linear warm-up, then constant."""
    if iteration >= warmup_iters or warmup_iters == 0:
        return base_lr
    alpha = iteration / warmup_iters
    return base_lr * (WARMUP_FACTOR * (1 - alpha) + alpha)


class BatchSchedule:
    """Which training images (and flips) iteration `it` uses; a function of (seed, it).

    The images are taken in consecutive slices of one random permutation per pass over
    the data (like detectron2's TrainingSampler), so each image is seen once per pass.
    """

    def __init__(self, n: int, batch_size: int, seed: int, flip: bool) -> None:
        self.n, self.batch_size, self.seed, self.flip = n, batch_size, seed, flip
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def indices(self, it: int) -> list[int]:
        out = []
        for p in range(it * self.batch_size, (it + 1) * self.batch_size):
            out.append(int(self._perm(p // self.n)[p % self.n]))
        return out

    def flips(self, it: int) -> list[bool]:
        if not self.flip:
            return [False] * self.batch_size
        g = torch.Generator().manual_seed(self.seed * 7_919 + it + 1)
        return [bool(b) for b in torch.rand(self.batch_size, generator=g) < 0.5]


def _hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Horizontal flip of an image (3, H, W), its boxes (N, 4) xyxy and masks (N, H, W)."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def make_batch(
    data: CocoInstances, schedule: BatchSchedule, it: int, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = [], []
    for i, flip in zip(schedule.indices(it), schedule.flips(it), strict=True):
        image, target = data[i]
        if flip:
            image, target = _hflip(image, target)
        images.append(image.to(device))
        targets.append({k: v.to(device) for k, v in target.items()})
    return images, targets


# --- checkpoints -----------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    spec: ModelSpec,
    category_ids: list[int],
    backbone: str,
    evals: list[dict[str, Any]],
    train_seconds: float,
) -> None:
    """Atomic `torch.save` of everything a resumed run needs (weights_only-loadable)."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_spec": spec.to_dict(),
        "category_ids": list(category_ids),
        "backbone": backbone,
        "evals": evals,
        "train_seconds": train_seconds,
        "rng": capture_rng_state(),
    }
    atomic.torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint` (TempoError naming the file otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise TempoError(f"--resume {path}: no such file (runs/<name>/last.pt of a segment run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated files raise assorted types
        raise TempoError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TempoError(
            f"{path} is not a `tempo segment` checkpoint (runs/<name>/last.pt); "
            "to start from a backbone use --path"
        )
    return state


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the loop, so a checkpoint is written first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- the run ---------------------------------------------------------------------------


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


def train_backbone(
    settings: SegmentSettings,
    data: SegmentData,
    run_dir: RunDir,
    device: torch.device,
    *,
    backbone: str,
    body_state: dict[str, torch.Tensor] | None,
    spec: ModelSpec,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one Mask R-CNN and return its record:
    {checkpoint, evals, iterations_to_90pct_final_segm_AP, final, last_checkpoint}.

    `body_state` initialises the ResNet body (ignored when `resume` is given: the
    checkpoint's full model state is loaded instead).
    """
    model = build_maskrcnn(spec, None if resume else body_state, source=backbone).to(device)
    optimizer = torch.optim.SGD(
        parameter_groups(model, settings.weight_decay),
        lr=settings.lr,
        momentum=settings.momentum,
    )
    start, evals, train_seconds = 0, [], 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        start = int(resume["iteration"])
        evals = list(resume.get("evals", []))
        train_seconds = float(resume.get("train_seconds", 0.0))
        restore_rng_state(resume["rng"])
        log(f"resuming from iteration {start}", settings.quiet)

    ckpt_path = run_dir.path / "last.pt"
    category_ids = data.train_split.category_ids

    def checkpoint(iteration: int) -> None:
        save_checkpoint(
            ckpt_path,
            model=model,
            optimizer=optimizer,
            iteration=iteration,
            spec=spec,
            category_ids=category_ids,
            backbone=backbone,
            evals=evals,
            train_seconds=train_seconds,
        )

    schedule = BatchSchedule(len(data.train), settings.batch_size, settings.seed, settings.augment)
    tb = run_dir.tensorboard()
    model.train()
    period_losses: list[float] = []
    it = start
    with (
        ProgressBar(settings.max_iter, f"segment {backbone}", settings.quiet) as bar,
        _sigterm_as_interrupt(),
    ):
        bar.advance(start)
        try:
            while it < settings.max_iter:
                t0 = time.perf_counter()
                lr = lr_at(it, settings.lr, settings.warmup_iters)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, targets = make_batch(data.train, schedule, it, device)
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
                value = loss.item()
                if not math.isfinite(value):
                    raise TempoError(
                        f"the loss became {value} at iteration {it + 1} ({backbone}); "
                        "lower --lr or raise --warmup-iters"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                train_seconds += time.perf_counter() - t0
                it += 1
                period_losses.append(value)
                if tb is not None:
                    tb.add_scalar("loss/total", value, it)
                    for k, v in loss_dict.items():
                        tb.add_scalar(f"loss/{k}", v.item(), it)
                    tb.add_scalar("lr", lr, it)
                bar.advance(1, loss=value, lr=lr)
                if it % settings.eval_period == 0 or it == settings.max_iter:
                    result = evaluate(
                        model,
                        data.test,
                        device,
                        settings.eval_score_thresh,
                        batch_size=settings.batch_size,
                    )
                    mean_loss = sum(period_losses) / len(period_losses)
                    period_losses = []
                    record = _eval_record(it, result.metrics, mean_loss, train_seconds)
                    evals.append(record)
                    if tb is not None:
                        for key in ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50"):
                            if record[key] is not None:
                                tb.add_scalar(f"AP/{key}", record[key], it)
                        tb.flush()
                    checkpoint(it)
                    run_dir.update_metrics(evals=evals)
                    log(
                        f"[{backbone}] iteration {it}/{settings.max_iter}: loss {mean_loss:.4f}"
                        f"  bbox AP {_fmt(record['bbox_AP'])}  segm AP {_fmt(record['segm_AP'])}"
                        f"  ({result.detections} detections)",
                        settings.quiet,
                    )
        except KeyboardInterrupt:
            checkpoint(it)
            raise Interrupted(
                f"interrupted at iteration {it}; continue with --resume {ckpt_path}"
            ) from None

    # Final evaluation at the reference's test threshold (0.7), with a few drawings.
    final = evaluate(
        model,
        data.test,
        device,
        settings.score_thresh,
        batch_size=settings.batch_size,
        keep_predictions=settings.vis_images,
    )
    final_record = {
        "iteration": it,
        "score_thresh": settings.score_thresh,
        **final.metrics,
        "detections": final.detections,
    }
    if tb is not None:
        for key in ("bbox_AP", "segm_AP"):
            if final.metrics.get(key) is not None:
                tb.add_scalar(f"AP_final/{key}", final.metrics[key], it)
        tb.flush()
    record = {
        "checkpoint": backbone,
        "evals": evals,
        "iterations_to_90pct_final_segm_AP": iterations_to_fraction(evals, 0.9),
        "final": final_record,
        "train_seconds": round(train_seconds, 3),
        "last_checkpoint": str(ckpt_path),
    }
    run_dir.update_metrics(**record)
    if evals:
        run_dir.save_figure(ap_figure(evals, f"Mask R-CNN from {backbone}"), "ap.png")
    if settings.vis_images and final.predictions:
        images = [data.test[i][0] for i in range(len(final.predictions))]
        fig = predictions_figure(
            images, final.predictions, data.test_split.category_names, settings.score_thresh
        )
        run_dir.save_figure(fig, "predictions.png")
    log(
        f"[{backbone}] final (score >= {settings.score_thresh:g}): bbox AP "
        f"{_fmt(final.metrics.get('bbox_AP'))}  segm AP {_fmt(final.metrics.get('segm_AP'))}",
        settings.quiet,
    )
    return record


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
