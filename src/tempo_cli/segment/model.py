"""torchvision Mask R-CNN (ResNet-FPN) whose ResNet body starts from a Tempo checkpoint.

Matches detectron2's `mask_rcnn_R_50_FPN_3x` where it matters for transfer (SPEC.md):
FrozenBatchNorm in the body, stem and res2 frozen (`FREEZE_AT = 2`, i.e. torchvision's
`trainable_layers = 3`), RGB input normalised with pixel mean [123.675, 116.28, 103.53]
and std [58.395, 57.12, 57.375] (in [0, 1] scale: the ImageNet mean/std), stride in the
3x3 convolution (torchvision's ResNet = `STRIDE_IN_1X1 = False`), 1,000 RPN proposals
per image after NMS in training, 640-800 px multi-scale training / 800 px test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from tempo_cli.errors import TempoError

# SPEC.md's pixel statistics (0-255 scale) divided by 255: torchvision normalises [0, 1] input.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
IMAGE_MEAN = [m / 255.0 for m in PIXEL_MEAN]
IMAGE_STD = [s / 255.0 for s in PIXEL_STD]

# detectron2's defaults: MIN_SIZE_TRAIN (640..800, "choice"), MIN_SIZE_TEST 800, MAX_SIZE 1333.
D2_MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
D2_MIN_SIZE_TEST = 800
D2_MAX_SIZE = 1333
# The ResNets Mask R-CNN takes (both engines), with detectron2's RESNETS.DEPTH.
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the same network (stored in checkpoints)."""

    arch: str
    num_classes: int  # object categories, without background
    image_size: int | None  # shorter side; None = detectron2's 640-800 / 800
    trainable_layers: int  # 0..5 ResNet stages trained (3 = detectron2 FREEZE_AT=2)
    frozen_bn: bool  # FrozenBatchNorm2d (detectron2 FrozenBN) or trainable BatchNorm2d
    roi_batch_size: int = 512  # detectron2 ROI_HEADS.BATCH_SIZE_PER_IMAGE
    proposals: int = 1000  # detectron2 RPN.POST_NMS_TOPK_TRAIN / _TEST (per image)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sizes(image_size: int | None) -> tuple[tuple[int, ...], int]:
    """(min_size for training (one value or detectron2's choices), max_size)."""
    if image_size is None:
        return D2_MIN_SIZE_TRAIN, D2_MAX_SIZE
    return (image_size,), int(math.ceil(image_size * D2_MAX_SIZE / D2_MIN_SIZE_TEST))


def load_body_state(body: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy a torchvision-keyed ResNet state dict into `body` (fc ignored); TempoError if
    any body tensor is missing or has the wrong shape."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = body.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise TempoError(
            f"{source}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the "
            f"Mask R-CNN body expects {tuple(own[wrong[0]].shape)}; is it another ResNet depth?"
        )
    result = body.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise TempoError(
            f"{source}: no value for {len(missing)} ResNet tensors (first: {missing[0]}); "
            "it is not a complete ResNet backbone"
        )


def build_maskrcnn(
    spec: ModelSpec, body_state: dict[str, torch.Tensor] | None = None, source: str = "backbone"
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone; `num_classes + 1` outputs (0 = background).

    `body_state` (torchvision ResNet keys) initialises the ResNet body; the FPN and the
    heads start from torchvision's default initialisation (draws from torch's global RNG,
    so seed first for identical heads across backbones).
    """
    norm = FrozenBatchNorm2d if spec.frozen_bn else nn.BatchNorm2d
    body = getattr(torchvision.models, spec.arch)(weights=None, norm_layer=norm)
    if body_state is not None:
        load_body_state(body, body_state, source)
    backbone = _resnet_fpn_extractor(body, spec.trainable_layers)
    min_size, max_size = sizes(spec.image_size)
    return MaskRCNN(
        backbone,
        num_classes=spec.num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        rpn_post_nms_top_n_train=spec.proposals,  # per image, as detectron2
        rpn_post_nms_top_n_test=spec.proposals,
        box_batch_size_per_image=spec.roi_batch_size,
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Trainable parameters; normalisation parameters get no weight decay
    (detectron2's WEIGHT_DECAY_NORM = 0)."""
    norm_types = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, norm_types) else decay).append(p)
    groups: list[dict[str, object]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
