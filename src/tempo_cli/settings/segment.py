"""Settings of `tempo segment` (Mask R-CNN transfer; SPEC.md "Instance segmentation").

Defaults are the reference protocol: detectron2's `mask_rcnn_R_50_FPN_3x` with 5 images
per batch, base lr 0.00025, 15,000 iterations, no lr decay, evaluation every 1,000
iterations and a final evaluation at score threshold 0.7. Options the reference left at
detectron2's defaults (momentum 0.9, weight decay 1e-4, 1,000 warm-up iterations, stem
and res2 frozen, horizontal flips, 640-800 px shorter side) are options here too.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tempo_cli.settings.base import CommandSettings


class SegmentSettings(CommandSettings):
    """`tempo segment`."""

    command: ClassVar[str] = "segment"

    # Repeated --path runs each backbone on the same schedule (the comparison);
    # TEMPO_PATH / TOML may give "a,b". Checked against --resume by the core.
    path: Annotated[list[str], NoDecode] = Field(default_factory=list)
    data: str = "ASL_mask"
    engine: Literal["torchvision", "detectron2"] = "torchvision"
    max_iter: int = Field(15000, ge=1)
    eval_period: int = Field(1000, ge=1)
    batch_size: int = Field(5, ge=1)
    lr: float = Field(0.00025, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_iters: int = Field(1000, ge=0)
    image_size: int | None = Field(None, ge=32, le=4096)
    # None = auto: 3 (stem and res2 frozen, detectron2's FREEZE_AT=2) for a trained
    # backbone, 5 (everything) for --path random.
    trainable_layers: int | None = Field(None, ge=0, le=5)
    # auto: FrozenBatchNorm (detectron2's FrozenBN) for a trained backbone, trainable
    # BatchNorm for --path random (frozen identity statistics would blow activations up).
    norm: Literal["auto", "frozen", "batch"] = "auto"
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    augment: bool = True
    # detectron2's ROI_HEADS.BATCH_SIZE_PER_IMAGE and RPN.POST_NMS_TOPK_{TRAIN,TEST}: the
    # sampled regions per image and the proposals kept; smaller is much faster on a CPU.
    roi_batch_size: int = Field(512, ge=1)
    proposals: int = Field(1000, ge=1)
    score_thresh: float = Field(0.7, ge=0, le=1)
    eval_score_thresh: float = Field(0.05, ge=0, le=1)
    eval_images: int | None = Field(None, ge=1)
    vis_images: int = Field(4, ge=0, le=64)
    resume: str | None = None
    seed: int = 0
    device: str = "auto"
    train_images: int | None = Field(None, ge=1)

    @field_validator("path", mode="before")
    @classmethod
    def _split_paths(cls, v: object) -> object:
        # One value from the environment / TOML may list several checkpoints: "a,b".
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v
