"""`tempo segment --engine detectron2`: the reference's own stack, as a thin adapter.

detectron2 is optional (not on the package registry; users build it from source). When it
imports, this runs SPEC.md's configuration through detectron2's API: the model-zoo config
`COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x`, bitmask masks, RGB input with SPEC.md's
pixel mean/std, `STRIDE_IN_1X1 = False`, the backbone written as a detectron2 `.pkl`
(models.detectron2_format), `DefaultTrainer` with a COCOEvaluator every eval period and a
final evaluation at the reference's score threshold. The datasets are the same validated
COCO files the torchvision engine reads (written sanitised into `runs/<name>/coco/` and
registered with `register_coco_instances`), and the outputs are the same: metrics.json
(`evals`, `iterations_to_90pct_final_segm_AP`, `final`), TensorBoard `loss/total` and
`AP/*` in `runs/<name>/`, `ap.png`. detectron2's own logs, events and checkpoints go to
`runs/<name>/detectron2/`; `--resume` takes one of its `model_*.pth` files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempo_cli import atomic, places
from tempo_cli.data.coco import CocoSplit
from tempo_cli.errors import TempoError
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.segment.evaluation import iterations_to_fraction
from tempo_cli.segment.model import PIXEL_MEAN, PIXEL_STD, sizes
from tempo_cli.settings.segment import SegmentSettings

if TYPE_CHECKING:
    from tempo_cli.segment.engines import SegmentJob

CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
INSTALL = "pip install 'git+https://github.com/facebookresearch/detectron2.git'"


class Detectron2Engine:
    """`--engine detectron2` (optional dependency)."""

    name = "detectron2"

    def available(self) -> bool:
        try:
            require_detectron2()
        except TempoError:
            return False
        return True

    def require(self) -> None:
        """TempoError (one line) unless detectron2 imports."""
        require_detectron2()

    def restore(self, resume: Path) -> tuple[dict[str, Any], None]:
        """(the run's settings from its config.json, nothing): `--resume` takes one of
        detectron2's own `runs/<name>/detectron2/model_*.pth`, which detectron2 reloads."""
        for folder in (resume.parent, resume.parent.parent):
            config = folder / "config.json"
            if config.is_file():
                saved = json.loads(config.read_text())
                if saved.get("command") == "segment":
                    return saved, None
        return {}, None

    def train(self, job: SegmentJob, resumed: None) -> dict[str, Any]:
        return train_detectron2(job)


ENGINE = Detectron2Engine()


def require_detectron2() -> None:
    """TempoError (one line) unless detectron2 imports."""
    try:
        import detectron2  # noqa: F401
        from detectron2.engine import DefaultTrainer  # noqa: F401
    except ImportError as e:
        raise TempoError(
            "--engine detectron2 needs detectron2, an optional dependency that is not installed "
            f"({e}); install it with {INSTALL} (builds from source: needs a C++ compiler and "
            "torch), or use the default --engine torchvision"
        ) from None


def write_split_json(split: CocoSplit, image_ids: list[int], path: Path) -> Path:
    """The validated split restricted to `image_ids`, written as a COCO file (atomic)."""
    keep = set(image_ids)
    d = dict(split.coco_dict)
    d["images"] = [im for im in d["images"] if int(im["id"]) in keep]
    d["annotations"] = [a for a in d["annotations"] if int(a["image_id"]) in keep]
    atomic.write_text(path, json.dumps(d))
    return path


def _register(name: str, json_path: Path, image_root: Path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_path), str(image_root))


def build_config(
    settings: SegmentSettings,
    *,
    num_classes: int,
    weights: str,
    train_name: str,
    test_name: str,
    output_dir: Path,
    device: torch.device,
    frozen_bn: bool,
    trainable_layers: int,
) -> Any:
    """detectron2 CfgNode of SPEC.md's protocol with this run's options."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(CONFIG))
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.DATASETS.TEST = (test_name,)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(PIXEL_STD)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN" if frozen_bn else "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 5 - trainable_layers
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.eval_score_thresh
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = settings.roi_batch_size
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = settings.proposals
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = settings.proposals
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = device.type
    cfg.SOLVER.IMS_PER_BATCH = settings.batch_size
    cfg.SOLVER.BASE_LR = settings.lr
    cfg.SOLVER.MOMENTUM = settings.momentum
    cfg.SOLVER.WEIGHT_DECAY = settings.weight_decay
    cfg.SOLVER.WARMUP_ITERS = settings.warmup_iters
    cfg.SOLVER.MAX_ITER = settings.max_iter
    cfg.SOLVER.STEPS = ()  # no lr decay
    cfg.SOLVER.CHECKPOINT_PERIOD = settings.eval_period
    cfg.TEST.EVAL_PERIOD = settings.eval_period
    if settings.image_size is not None:
        (min_size,), max_size = sizes(settings.image_size)
        cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
        cfg.INPUT.MIN_SIZE_TEST = min_size
        cfg.INPUT.MAX_SIZE_TRAIN = max_size
        cfg.INPUT.MAX_SIZE_TEST = max_size
    if not settings.augment:
        cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATALOADER.NUM_WORKERS = min(4, os.cpu_count() or 1)
    cfg.SEED = settings.seed
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


def _ap(results: dict[str, Any]) -> dict[str, float | None]:
    """detectron2's COCOEvaluator results (percent) -> our keys (fractions)."""
    out: dict[str, float | None] = {}
    for task in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75"):
            v = results.get(task, {}).get(k)
            out[f"{task}_{k}"] = None if v is None or v != v else float(v) / 100.0
    return out


def train_detectron2(job: SegmentJob) -> dict[str, Any]:
    """Train and evaluate through detectron2; returns the same record as the torchvision
    engine ({checkpoint, evals, iterations_to_90pct_final_segm_AP, final, ...})."""
    settings, path, run_dir = job.settings, job.path, job.run_dir
    require_detectron2()
    cfg, test_name = _prepare(job)
    evals: list[dict[str, Any]] = []
    if settings.resume and (run_dir.path / "metrics.json").is_file():
        # Continuing in the same run folder: keep the evaluations made before.
        evals = list(json.loads((run_dir.path / "metrics.json").read_text()).get("evals", []))
    trainer_cls, hook = _trainer_class(settings, path, run_dir, evals)
    trainer = trainer_cls(cfg)
    trainer.register_hooks([hook])
    trainer.resume_or_load(resume=False)
    if settings.resume:
        trainer.checkpointer.load(str(settings.resume))  # model, optimizer, scheduler, iter
        trainer.start_iter = trainer.iter + 1
        evals[:] = [e for e in evals if e["iteration"] <= trainer.start_iter]
    trainer.train()
    return _finish(settings, path, cfg, trainer, test_name, run_dir, evals)


def _prepare(job: SegmentJob) -> tuple[Any, str]:
    """Register the validated splits, write the backbone as .pkl -> (config, test set name)."""
    from tempo_cli.segment.batches import make_data
    from tempo_cli.segment.core import backbone_state
    from tempo_cli.segment.train import auto_freezing

    settings, path, run_dir, train_split = job.settings, job.path, job.run_dir, job.train_split
    data = make_data(
        job.root, train_split, job.test_split, settings.train_images, settings.eval_images
    )
    coco_dir = run_dir.path / "coco"
    train_json = write_split_json(train_split, data.train.image_ids, coco_dir / "train.json")
    test_json = write_split_json(job.test_split, data.test.image_ids, coco_dir / "test.json")
    tag = f"tempo_{abs(hash(str(run_dir.path))) % 10**8}"
    _register(f"{tag}_train", train_json, train_split.image_root)
    _register(f"{tag}_test", test_json, job.test_split.image_root)

    weights = ""
    if settings.resume is None and not (places.is_named_baseline(path) and path == "random"):
        from tempo_cli.models.detectron2_format import save_detectron2_pkl

        arch, state = backbone_state(path, "resnet50")
        if arch != "resnet50":
            raise TempoError(
                f"{path}: a {arch} backbone; detectron2's {CONFIG} needs a ResNet-50 "
                "(the torchvision engine also takes ResNet-18/34)"
            )
        weights = str(save_detectron2_pkl(run_dir.path / "backbone.pkl", state))
    trainable, frozen_bn = auto_freezing(settings, path)
    cfg = build_config(
        settings, num_classes=train_split.num_classes, weights=weights,
        train_name=f"{tag}_train", test_name=f"{tag}_test",
        output_dir=run_dir.path / "detectron2", device=job.device, frozen_bn=frozen_bn,
        trainable_layers=trainable,
    )  # fmt: skip
    return cfg, f"{tag}_test"


def _trainer_class(
    settings: SegmentSettings, path: str, run_dir: RunDir, evals: list[dict[str, Any]]
) -> tuple[type, Any]:
    """A DefaultTrainer whose periodic evaluations append to `evals` (and metrics.json,
    TensorBoard), and the hook that copies its total loss to TensorBoard."""
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils.events import get_event_storage

    tb = run_dir.tensorboard()
    losses: list[float] = []  # since the previous evaluation

    class LossHook(HookBase):
        """Copies detectron2's total loss into the run's TensorBoard (`loss/total`)."""

        def after_step(self) -> None:
            storage = self.trainer.storage
            if "total_loss" in storage.histories():
                v = float(storage.history("total_loss").latest())
                losses.append(v)
                if tb is not None:
                    tb.add_scalar("loss/total", v, self.trainer.iter + 1)

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: Any = None) -> Any:
            out = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            return COCOEvaluator(dataset_name, output_dir=out)

        @classmethod
        def test(cls, cfg: Any, model: Any, evaluators: Any = None) -> Any:
            results = super().test(cfg, model, evaluators)
            iteration = get_event_storage().iter + 1
            ap = _ap(results)
            loss = sum(losses) / len(losses) if losses else None
            losses.clear()
            keys = ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50")
            evals.append({"iteration": iteration, **{k: ap[k] for k in keys}, "loss": loss})
            if tb is not None:
                for key in keys:
                    if ap[key] is not None:
                        tb.add_scalar(f"AP/{key}", ap[key], iteration)
                tb.flush()
            run_dir.update_metrics(evals=evals)
            log(
                f"[{path}] iteration {iteration}: bbox AP {ap['bbox_AP']}  segm AP {ap['segm_AP']}",
                settings.quiet,
            )
            return results

    return Trainer, LossHook()


def _finish(
    settings: SegmentSettings,
    path: str,
    cfg: Any,
    trainer: Any,
    test_name: str,
    run_dir: RunDir,
    evals: list[dict[str, Any]],
) -> dict[str, Any]:
    """Final evaluation at the reference's test threshold; the run's record and ap.png."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator

    model = trainer.model
    model = getattr(model, "module", model)
    model.roi_heads.box_predictor.test_score_thresh = settings.score_thresh
    out = str(run_dir.path / "detectron2" / "inference_final")
    final = DefaultTrainer.test(cfg, model, [COCOEvaluator(test_name, output_dir=out)])
    final_record = {
        "iteration": settings.max_iter,
        "score_thresh": settings.score_thresh,
        **_ap(final),
    }
    record = {
        "checkpoint": path,
        "engine": "detectron2",
        "evals": evals,
        "iterations_to_90pct_final_segm_AP": iterations_to_fraction(evals, 0.9),
        "final": final_record,
        "last_checkpoint": str(run_dir.path / "detectron2" / "model_final.pth"),
    }
    run_dir.update_metrics(**record)
    if evals:
        from tempo_cli.segment.plots import ap_figure

        run_dir.save_figure(ap_figure(evals, f"Mask R-CNN (detectron2) from {path}"), "ap.png")
    return record
