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

from tempo_cli.settings.base import Backbone, CommandSettings, Device, device_field


class SegmentSettings(CommandSettings):
    """`tempo segment`."""

    command: ClassVar[str] = "segment"

    # TEMPO_PATH / TOML may give "a,b". Checked against --resume by the core.
    path: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Backbone checkpoint: a file (any format `tempo` reads, detectron2 .pkl "
        "included), a name in the model directory, random or imagenet. Repeat to compare "
        "backbones on the same schedule.",
    )
    data: str = Field(
        "ASL_mask",
        description="COCO instances dataset (annotations/instances_{Train,Test}.json + "
        "images/): a name (ASL_mask, demo) or a folder.",
    )
    engine: Literal["torchvision", "detectron2"] = Field(
        "torchvision",
        description="torchvision (built in) or detectron2 (optional, installed separately).",
    )
    max_iter: int = Field(15000, ge=1, description="Training iterations.")
    eval_period: int = Field(1000, ge=1, description="Evaluate and checkpoint every N iterations.")
    batch_size: int = Field(5, ge=1, description="Images per batch.")
    lr: float = Field(0.00025, gt=0, description="Base learning rate (no decay).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (none on norm layers).")
    warmup_iters: int = Field(1000, ge=0, description="Linear lr warm-up iterations.")
    image_size: int | None = Field(
        None,
        ge=32,
        le=4096,
        description="Shorter image side in pixels, train and test (absent: detectron2's "
        "640-800 train / 800 test).",
    )
    trainable_layers: int | None = Field(
        None,
        ge=0,
        le=5,
        description="ResNet stages trained, 0-5 (absent: 3 = stem and res2 frozen, "
        "detectron2's FREEZE_AT=2; 5 for --path random).",
    )
    # auto: FrozenBatchNorm (detectron2's FrozenBN) for a trained backbone, trainable
    # BatchNorm for --path random (frozen identity statistics would blow activations up).
    norm: Literal["auto", "frozen", "batch"] = Field(
        "auto",
        description="Backbone BatchNorm: frozen, batch or auto (frozen unless --path random).",
    )
    backbone: Backbone = Field("resnet50", description="ResNet depth for --path random|imagenet.")
    augment: bool = Field(True, description="Random horizontal flips in training.")
    # Smaller is much faster on a CPU.
    roi_batch_size: int = Field(
        512,
        ge=1,
        description="Regions sampled per image for the box/mask heads (detectron2 "
        "ROI_HEADS.BATCH_SIZE_PER_IMAGE).",
    )
    proposals: int = Field(
        1000,
        ge=1,
        description="RPN proposals kept per image after NMS, train and test (detectron2 "
        "POST_NMS_TOPK_*).",
    )
    score_thresh: float = Field(
        0.7, ge=0, le=1, description="Score threshold of the final evaluation."
    )
    eval_score_thresh: float = Field(
        0.05, ge=0, le=1, description="Score threshold of the periodic evaluations."
    )
    eval_images: int | None = Field(
        None, ge=1, description="Evaluate on the first N test images only (absent: all)."
    )
    vis_images: int = Field(
        4, ge=0, le=64, description="Test images drawn with their predicted masks."
    )
    resume: str | None = Field(
        None, description="Continue from runs/<name>/last.pt (its iteration, optimizer, RNG)."
    )
    seed: int = Field(0, description="Random seed.")
    device: Device = device_field()
    train_images: int | None = Field(
        None, ge=1, description="Use only the first N annotated training images (quick checks)."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _split_paths(cls, v: object) -> object:
        # One value from the environment / TOML may list several checkpoints: "a,b".
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v
