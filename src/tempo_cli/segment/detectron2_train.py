"""The detectron2 engine's run: detectron2's model, solver, data mapping and COCOEvaluator
inside tempo's one training loop (segment.loop `SegmentRun`).

What is detectron2's own: `build_model` of the model-zoo config (segment.detectron2_config),
`build_optimizer` / `build_lr_scheduler` (SGD, no weight decay on norms, linear warm-up,
no steps), `DatasetMapper` (PIL read, `ResizeShortestEdge` on the uint8 image, bitmask
`Instances`), the forward pass and losses, and `inference_on_dataset` with a
`COCOEvaluator` on the registered test split. What is tempo's: the loop (stop between
steps on SIGINT/SIGTERM, loss read-back, TensorBoard, evaluation every `--eval-period`),
the batch order and flips (segment.batches: a function of seed and iteration, the same
batches the torchvision engine draws), and `last.pt`, tempo's one training envelope
(kind "tempo-segment", payload `engine: detectron2`) with detectron2's model, optimizer
and scheduler states and every RNG (ResizeShortestEdge draws from NumPy's).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tempo_cli import atomic
from tempo_cli.data.coco import CocoSplit
from tempo_cli.report.run_dir import RunDir
from tempo_cli.segment.batches import SegmentData
from tempo_cli.segment.detectron2_config import D2Spec, build_config, build_model, load_backbone
from tempo_cli.segment.evaluation import Evaluation
from tempo_cli.segment.loop import SegmentJob, SegmentRun
from tempo_cli.segment.model import sizes
from tempo_cli.training.state import TrainingState

_NAMES = itertools.count()  # registered dataset names are unique within the process
_KEYS = [f"{t}_{s}" for t in ("bbox", "segm") for s in ("AP", "AP50", "AP75")]
# detectron2's, fvcore's, and torch.fx's (detectron2 calls its deprecated is_fx_tracing).
_D2_LOGGERS = ("detectron2", "fvcore", "torch.fx._symbolic_trace")
# Raised inside detectron2 (anchors, mask targets) by current torch: nothing to act on.
_D2_WARNINGS = ("torch.meshgrid: in an upcoming release", "The given NumPy array is not writable")


def write_split_json(split: CocoSplit, image_ids: list[int], path: Path) -> Path:
    """The validated split restricted to `image_ids`, written as a COCO file (atomic)."""
    keep = set(image_ids)
    d = dict(split.coco_dict)
    d["images"] = [im for im in d["images"] if int(im["id"]) in keep]
    d["annotations"] = [a for a in d["annotations"] if int(a["image_id"]) in keep]
    atomic.write_text(path, json.dumps(d))
    return path


def register_split(split: CocoSplit, image_ids: list[int], path: Path) -> str:
    """Write one split to `path` and register it (`register_coco_instances`); its name."""
    from detectron2.data.datasets import register_coco_instances

    name = f"tempo_{os.getpid()}_{next(_NAMES)}_{path.stem}"
    json_path = write_split_json(split, image_ids, path)
    register_coco_instances(name, {}, str(json_path), str(split.image_root))
    return name


def log_path(run_dir: RunDir) -> Path:
    """Where detectron2's log records and pycocotools' tables go."""
    return run_dir.path / "detectron2.log"


@contextlib.contextmanager
def detectron2_logs(path: Path) -> Iterator[None]:
    """detectron2's (and its libraries') log records go to `path`, not to the terminal; the
    warnings detectron2's own code triggers in current torch are not printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = []
    for name in _D2_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        with warnings.catch_warnings():
            for message in _D2_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


class D2Run(SegmentRun[D2Spec]):
    """One detectron2 Mask R-CNN training run in tempo's loop."""

    def __init__(self, job: SegmentJob, data: SegmentData, spec: D2Spec) -> None:
        super().__init__(job, data, spec)
        self.log_path = log_path(job.run_dir)
        coco = job.run_dir.path / "coco"
        train, test = data.train, data.test
        self.train_name = register_split(data.train_split, train.image_ids, coco / "train.json")
        self.test_name = register_split(data.test_split, test.image_ids, coco / "test.json")

    def build(self, body_state: dict[str, torch.Tensor] | None) -> None:
        """detectron2's model (backbone from `body_state`), optimizer, scheduler, mappers."""
        from detectron2.data import DatasetCatalog, DatasetMapper
        from detectron2.data import transforms as T
        from detectron2.solver import build_lr_scheduler, build_optimizer

        s = self.s
        self.cfg = build_config(s, self.spec, self.device)
        self.model = build_model(self.cfg)
        if body_state is not None:
            load_backbone(self.model, body_state, self.backbone)
        self.model.train()
        self.optimizer = build_optimizer(self.cfg, self.model)
        self.scheduler = build_lr_scheduler(self.cfg, self.optimizer)
        by_id = {d["image_id"]: d for d in DatasetCatalog.get(self.train_name)}
        self.train_dicts = [by_id[i] for i in self.data.train.image_ids]  # schedule's order
        train_sizes, max_size = sizes(s.image_size)
        resize = T.ResizeShortestEdge(train_sizes, max_size, "choice")
        common = {"image_format": "RGB", "use_instance_mask": True}
        common["instance_mask_format"] = "bitmask"
        # The flips are the schedule's (seed, iteration), as in the torchvision engine.
        self.mappers = {
            flip: DatasetMapper(
                True, augmentations=[resize, *([T.RandomFlip(prob=1.0)] if flip else [])], **common
            )
            for flip in (False, True)
        }
        test_size = s.image_size or self.cfg.INPUT.MIN_SIZE_TEST
        self.test_mapper = DatasetMapper(
            False, augmentations=[T.ResizeShortestEdge(test_size, max_size)], image_format="RGB"
        )

    def restore(self, state: TrainingState | None) -> None:
        super().restore(state)
        if state is not None and "scheduler" in state.payload:
            self.scheduler.load_state_dict(state.payload["scheduler"])

    def step(self, it: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """One SGD step on iteration `it`'s batch -> (total loss, its parts, lr)."""
        from detectron2.utils.events import EventStorage

        pairs = zip(self.schedule.indices(it), self.schedule.flips(it), strict=True)
        # detectron2's model records training statistics in the current EventStorage.
        with EventStorage(it):
            batch = [self.mappers[flip](self.train_dicts[i]) for i, flip in pairs]
            loss_dict = self.model(batch)
        loss = sum(loss_dict.values())
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, loss_dict, lr

    def payload(self) -> dict[str, Any]:
        return {
            **super().payload(),
            "engine": "detectron2",
            "scheduler": self.scheduler.state_dict(),
        }

    def evaluate(self, score_thresh: float, keep_predictions: int = 0) -> Evaluation:
        """detectron2's inference and COCOEvaluator at `score_thresh`; predictions of the
        first `keep_predictions` images in the torchvision engine's form (for the figure)."""
        from detectron2.data import DatasetCatalog, build_detection_test_loader
        from detectron2.evaluation import inference_on_dataset

        by_id = {d["image_id"]: d for d in DatasetCatalog.get(self.test_name)}
        dicts = [by_id[i] for i in self.data.test.image_ids]  # kept predictions: data.test's
        loader = build_detection_test_loader(dicts, mapper=self.test_mapper, num_workers=0)
        evaluator = _evaluator(self.test_name, keep_predictions)
        predictor = self.model.roi_heads.box_predictor
        old, predictor.test_score_thresh = predictor.test_score_thresh, score_thresh
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                results = inference_on_dataset(self.model, loader, evaluator)
        finally:
            predictor.test_score_thresh = old
            self.model.train()
        with open(self.log_path, "a") as f:  # pycocotools' printed tables
            f.write(out.getvalue())
        return Evaluation(
            metrics=ap_metrics(results or {}, evaluator.detections),
            detections=evaluator.detections,
            predictions=evaluator.kept,
        )


def ap_metrics(results: dict[str, Any], detections: int) -> dict[str, float | None]:
    """COCOEvaluator's results (percent) -> tempo's keys (fractions), with the torchvision
    engine's rules: no detection at all -> 0.0; an AP pycocotools cannot define -> None."""
    if detections == 0:
        return dict.fromkeys(_KEYS, 0.0)
    out: dict[str, float | None] = {}
    for key in _KEYS:
        task, metric = key.split("_")
        v = results.get(task, {}).get(metric)
        out[key] = None if v is None or v != v else float(v) / 100.0
    return out


def _evaluator(dataset_name: str, keep: int) -> Any:
    """A COCOEvaluator that also counts detections and keeps the first `keep` images'
    predictions as torchvision-style dicts (boxes, 1-based labels, scores, masks)."""
    from detectron2.evaluation import COCOEvaluator

    class Counting(COCOEvaluator):
        detections = 0
        kept: list[dict[str, torch.Tensor]]

        def reset(self) -> None:
            super().reset()
            self.detections, self.kept = 0, []

        def process(self, inputs: list[dict], outputs: list[dict]) -> None:
            for o in outputs:
                inst = o["instances"].to("cpu")
                self.detections += len(inst)
                if len(self.kept) < keep:
                    self.kept.append(
                        {
                            "boxes": inst.pred_boxes.tensor,
                            "labels": inst.pred_classes + 1,
                            "scores": inst.scores,
                            "masks": inst.pred_masks[:, None].float(),
                        }
                    )
            super().process(inputs, outputs)

    return Counting(dataset_name, tasks=("bbox", "segm"), distributed=False, output_dir=None)
