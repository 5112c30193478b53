"""detectron2's side of `--engine detectron2`: the import, the config, the model and its
backbone weights.

- `require_detectron2` imports the parts of detectron2 the engine uses, with the torch.jit
  FutureWarnings its import prints silenced (errors stay one line); without detectron2 it
  raises one TempoError line with the upstream install command.
- `build_config` reads SPEC.md's model-zoo config (`mask_rcnn_R_50_FPN_3x.yaml`) from the
  installed package's `model_zoo/configs/` folder, never through `detectron2.model_zoo`,
  which imports `pkg_resources` (gone from current setuptools) when it loads. ResNet-18/34
  bodies use detectron2's BasicBlock settings (`RESNETS.DEPTH`, `RES2_OUT_CHANNELS = 64`).
- `load_backbone` hands detectron2 a state dict tempo has already read itself (restricted
  unpickler for `.pkl`, `weights_only` for `.pth`): the same payload `tempo export
  --format detectron2` writes, through `DetectionCheckpointer._load_model` (its name
  matching, without its file reading, which unpickles without restriction).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli.errors import TempoError
from tempo_cli.segment.model import DEPTHS, PIXEL_MEAN, PIXEL_STD, sizes
from tempo_cli.settings.segment import SegmentSettings

CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
INSTALL = (
    "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
)


def require_detectron2() -> None:
    """Import what the engine uses (warnings of the import silenced); TempoError (one line,
    the install command) when detectron2 is not installed."""
    try:
        with warnings.catch_warnings():
            # detectron2's modules decorate functions with torch.jit APIs that current torch
            # deprecates: a FutureWarning per import, noise around every error message.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import detectron2
            import detectron2.checkpoint
            import detectron2.config
            import detectron2.data
            import detectron2.evaluation
            import detectron2.modeling
            import detectron2.solver  # noqa: F401
    except ImportError as e:
        raise TempoError(
            "--engine detectron2 needs detectron2, an optional dependency that is not installed "
            f"({e}); install it with {INSTALL} (builds from source: needs a C++ compiler and "
            "torch installed first), or use the default --engine torchvision"
        ) from None


def config_file() -> Path:
    """SPEC.md's model-zoo config inside the installed detectron2 package."""
    import detectron2

    path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / CONFIG
    if not path.is_file():
        raise TempoError(
            f"detectron2 is installed without its model-zoo configs ({path} is missing); "
            f"reinstall it with {INSTALL}"
        )
    return path


@dataclass(frozen=True)
class D2Spec:
    """What rebuilds the same detectron2 network (stored in the resumable checkpoint)."""

    arch: str
    num_classes: int
    trainable_layers: int
    frozen_bn: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_config(settings: SegmentSettings, spec: D2Spec, device: torch.device) -> Any:
    """detectron2 CfgNode of SPEC.md's protocol with this run's options (frozen)."""
    from detectron2.config import get_cfg

    if spec.arch not in DEPTHS:
        raise TempoError(f"a {spec.arch} backbone; Mask R-CNN takes ResNet-18/34/50")
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file()))
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(PIXEL_STD)
    cfg.MODEL.WEIGHTS = ""  # tempo loads the backbone itself (load_backbone)
    cfg.MODEL.RESNETS.DEPTH = DEPTHS[spec.arch]
    if spec.arch != "resnet50":  # detectron2's BasicBlock ResNets need 64 res2 channels
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN" if spec.frozen_bn else "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 5 - spec.trainable_layers
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = spec.num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.eval_score_thresh
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = settings.roi_batch_size
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = settings.proposals
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = settings.proposals
    cfg.MODEL.DEVICE = device.type if device.index is None else f"{device.type}:{device.index}"
    cfg.SOLVER.IMS_PER_BATCH = settings.batch_size
    cfg.SOLVER.BASE_LR = settings.lr
    cfg.SOLVER.MOMENTUM = settings.momentum
    cfg.SOLVER.WEIGHT_DECAY = settings.weight_decay
    cfg.SOLVER.WARMUP_ITERS = settings.warmup_iters
    cfg.SOLVER.MAX_ITER = settings.max_iter
    cfg.SOLVER.STEPS = ()  # the reference removed the lr decay
    cfg.TEST.EVAL_PERIOD = settings.eval_period
    if settings.image_size is not None:
        (min_size,), max_size = sizes(settings.image_size)
        cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
        cfg.INPUT.MIN_SIZE_TEST = min_size
        cfg.INPUT.MAX_SIZE_TRAIN = max_size
        cfg.INPUT.MAX_SIZE_TEST = max_size
    cfg.INPUT.RANDOM_FLIP = "horizontal" if settings.augment else "none"
    cfg.DATALOADER.NUM_WORKERS = 0  # batches are mapped in the loop (segment.batches order)
    cfg.SEED = settings.seed
    cfg.freeze()
    return cfg


def build_model(cfg: Any) -> nn.Module:
    """detectron2's GeneralizedRCNN of `cfg` (random init: seed first), on its device."""
    from detectron2.modeling import build_model as d2_build_model

    return d2_build_model(cfg)


def load_payload(model: nn.Module, payload: dict[str, Any]) -> list[str]:
    """Load a detectron2 weight dict ({"model": ..., "matching_heuristics": ...}, already in
    memory) into `model` with detectron2's own matching; the backbone keys it left unset
    or could not fill (wrong shape)."""
    from detectron2.checkpoint import DetectionCheckpointer

    # `_load_model` is the checkpointer's loading without its file reading (which unpickles
    # without restriction): it converts numpy values and, with matching_heuristics, matches
    # `stem.*`/`resN.*` to `backbone.bottom_up.*`.
    result = DetectionCheckpointer(model)._load_model(dict(payload))
    unset = [*result.missing_keys, *(k for k, *_ in result.incorrect_shapes)]
    return [
        k
        for k in unset
        if k.startswith("backbone.bottom_up.") and not k.endswith("num_batches_tracked")
    ]


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a torchvision-keyed ResNet state (already read by tempo) into the model's
    `backbone.bottom_up`: the payload `tempo export --format detectron2` writes, matched by
    detectron2. TempoError naming `source` when a backbone tensor stays unset."""
    from tempo_cli.models.detectron2_format import detectron2_payload

    unset = load_payload(model, detectron2_payload(state))
    if unset:
        raise TempoError(
            f"{source}: no matching value for {len(unset)} detectron2 backbone tensors "
            f"(first: {unset[0]}); is it another ResNet depth than --backbone?"
        )
