"""Settings of `tempo pretrain` (defaults = the reference protocol of SPEC.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from tempo_cli.settings.base import (
    AUTO,
    Backbone,
    CommandSettings,
    Device,
    RecordedImageSize,
    device_field,
    image_size_field,
    recipe_field,
)

#: `--image-size auto` when `--init` records no input size (imagenet, random, reference files).
IMAGE_SIZE = 128
ImageSize = image_size_field(16, 4096)
#: The linear evaluation of `--eval` (a quick check, not the full protocol of `tempo eval`).
EVAL_RUNS = 3
EVAL_ITERATIONS = 3000
EVAL_BATCH_SIZE = 10
EVAL_LR = 0.01

#: Fields that describe how this invocation runs, not what is trained; `--resume` never
#: takes them from the checkpoint (so `--max-steps` limits one invocation only).
RUNTIME_FIELDS = frozenset(
    {"name", "quiet", "debug", "resume", "device", "workers", "checkpoint_minutes", "max_steps"}
)


class PretrainSettings(RecordedImageSize, CommandSettings):
    """Tempo pre-training: Barlow Twins on pairs of temporally close frames."""

    command: ClassVar[str] = "pretrain"
    fallback_image_size: ClassVar[int] = IMAGE_SIZE

    data: str = Field(
        "asl",
        description="Dataset name or root with frames/, a folder of frames, a video file or a "
        "folder of videos.",
    )
    recipe: str | None = recipe_field()
    epochs: int = Field(15, ge=1, description="Epochs.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    l: float = Field(1e-3, ge=0, description="Barlow Twins off-diagonal weight lambda.")  # noqa: E741
    loss_std: Literal["unbiased", "biased"] = Field(
        "unbiased",
        description="Barlow Twins standardisation: unbiased (unbiased std, no epsilon: lightly "
        "1.2.35, the reference) or biased (biased std + 1e-5: newer lightly).",
    )
    pdf: Literal["uniform", "normal"] = Field(
        "uniform", description="Partner pmf: uniform (tau) or normal (sigma)."
    )
    proximity: float = Field(30, ge=1, description="tau (uniform) or sigma (normal), in frames.")
    pairs: Literal["temporal", "same"] = Field(
        "temporal",
        description="What each frame is paired with: temporal (a neighbour drawn by --pdf) or "
        "same (the frame itself: the views differ only by --augment).",
    )
    augment: Literal["none", "light", "strong"] = Field(
        "none",
        description="Augmentation of each view, drawn per image: none (the reference), light "
        "(random resized crop + flip) or strong (the Barlow Twins paper's recipe).",
    )
    crop_scale: float = Field(
        0.08,
        gt=0,
        le=1,
        description="Smallest crop of --augment light|strong, as a fraction of the frame's "
        "area (0.08: the Barlow Twins paper's; 1: no crop, the whole frame).",
    )
    batch_size: int = Field(200, ge=2, description="Pairs per step (global over all processes).")
    image_size: ImageSize = Field(
        AUTO,
        description="Frame side in pixels; auto = the size the --init checkpoint records, "
        f"else {IMAGE_SIZE}.",
    )
    backbone: Backbone = Field("resnet34", description="resnet18, resnet34 or resnet50.")
    init: str = Field("imagenet", description="Initial weights: imagenet, random or a checkpoint.")
    save_model: str | None = Field(
        None, description="Write the final model: a bare name goes to the model directory."
    )
    eval: bool = Field(
        False,
        description=f"Linear evaluation after training ({EVAL_RUNS} runs, batch "
        f"{EVAL_BATCH_SIZE}, {EVAL_ITERATIONS} iterations).",
    )
    bn_stats: Literal["running", "batch", "adapt"] = Field(
        "running",
        description="BatchNorm statistics of --eval: running (eval mode), batch (the "
        f"reference: train mode, shuffled batches of {EVAL_BATCH_SIZE}) or adapt "
        "(re-estimated on the evaluation images, then eval mode).",
    )
    monitor: Literal["auto", "knn", "linear", "none"] = Field(
        "auto",
        description="Accuracy watched at each epoch end on --monitor-data: knn (as `tempo eval "
        "knn`: k=20, T=0.07, cosine), linear (the batched probe, 1 run of 300 iterations) or "
        "none (label-free signals only); auto = knn when the data has labelled splits, else "
        "none.",
    )
    monitor_data: str | None = Field(
        None,
        description="Labelled data of --monitor: a dataset name or root, a class-folder tree or "
        "a manifest .csv (split as --split-fractions/--split-seed default); default: --data.",
    )
    monitor_samples_pc: int = Field(
        5, ge=1, description="Labelled images per class --monitor trains on (scored on test)."
    )
    monitor_every: int | None = Field(
        None, ge=1, description="Also monitor every N steps (besides each epoch end)."
    )
    monitor_pairs: int | None = Field(
        None,
        ge=2,
        description="Fixed seeded sample of training pairs for the label-free signals (RankMe, "
        "feature std, Barlow Twins terms); default: sized to --monitor-budget (64 to 512).",
    )
    monitor_budget: float = Field(
        0.05,
        gt=0,
        description="Share of the training time the monitor may take (above 1: longer than "
        "the training, e.g. every epoch on tiny data), estimated before "
        "training from the frames, steps and labelled images: the label-free sample and "
        "the epochs measured (every k and the last) are sized to it; kNN/linear of --monitor "
        "auto are dropped when one pass does not fit. An explicit --monitor knn|linear, "
        "--monitor-pairs, --monitor-every or --keep best is measured at least once.",
    )
    keep: Literal["final", "best"] = Field(
        "final",
        description="best: also write runs/<name>/best.pt, the epoch with the best monitor "
        "accuracy (on val when present, else test; RankMe without labels).",
    )
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd or adamw.")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-3, ge=0, description="Weight decay.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps in all (resumable)."
    )
    baseline: bool = Field(False, description="Skip training: the initial backbone alone.")
    resume: Path | None = Field(
        None, description="Continue from a resumable checkpoint (runs/<name>/last.pt)."
    )
    seed: int = Field(0, ge=0, description="Seed: same seed -> same losses on CPU.")
    device: Device = device_field()
    workers: int = Field(1, ge=0, le=16, description="Background threads preparing batches.")
    checkpoint_minutes: float = Field(10.0, gt=0, description="Also save last.pt every N minutes.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Step arithmetic: fp32 (the reference's), bf16 or fp16 (autocast, "
        "channels-last; fp16 on CUDA with a gradient scaler); auto = bf16 on a CUDA GPU with "
        "native bfloat16, else fp32.",
    )

    @field_validator("proximity")
    @classmethod
    def _proximity(cls, v: float, info: ValidationInfo) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("a finite number >= 1")
        if info.data.get("pdf") == "uniform" and float(v) != int(v):
            raise ValueError("--pdf uniform needs a whole number of frames (tau)")
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: str, info: ValidationInfo) -> str:
        if v == "none" and info.data.get("pairs") == "same":
            raise ValueError(
                "--pairs same needs --augment light or strong (else both views are the same image)"
            )
        return v

    @field_validator("init")
    @classmethod
    def _init_exists(cls, v: str) -> str:
        from tempo_cli import places

        if places.is_named_baseline(v):
            return v
        found = places.resolve_checkpoint(v)
        if not (found.is_file() or (found / "model.safetensors").is_file()):
            raise ValueError(
                "imagenet, random, or an existing checkpoint file, model folder or model name"
            )
        return v

    @field_validator("resume")
    @classmethod
    def _resume_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError("an existing resumable checkpoint, e.g. runs/<name>/last.pt")
        return v

    @field_validator("save_model")
    @classmethod
    def _save_model_nonempty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("a model name or a file path")
        return v

    def proximity_param(self) -> int | float:
        """The pmf parameter: int tau for `uniform`, float sigma for `normal`."""
        return int(self.proximity) if self.pdf == "uniform" else float(self.proximity)
