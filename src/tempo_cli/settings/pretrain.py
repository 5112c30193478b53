"""Settings of `tempo pretrain` (defaults = the reference protocol of SPEC.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from tempo_cli.settings.base import CommandSettings

#: Fields that describe how this invocation runs, not what is trained; `--resume` never
#: takes them from the checkpoint (so `--max-steps` limits one invocation only).
RUNTIME_FIELDS = frozenset(
    {"name", "quiet", "debug", "resume", "device", "workers", "checkpoint_minutes", "max_steps"}
)


class PretrainSettings(CommandSettings):
    """Tempo pre-training: Barlow Twins on pairs of temporally close frames."""

    command: ClassVar[str] = "pretrain"

    data: str = Field("asl", description="dataset name or root with frames/, frames, video(s)")
    epochs: int = Field(15, ge=1)
    lr: float = Field(1e-3, gt=0)
    l: float = Field(1e-3, ge=0, description="Barlow Twins off-diagonal weight lambda")  # noqa: E741
    pdf: Literal["uniform", "normal"] = "uniform"
    proximity: float = Field(30, ge=1, description="tau (uniform) or sigma (normal), frames")
    batch_size: int = Field(200, ge=2)
    image_size: int = Field(128, ge=16)
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet34"
    init: str = "imagenet"
    save_model: str | None = None
    eval: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(1e-3, ge=0)
    max_steps: int | None = Field(None, ge=1)
    baseline: bool = False
    resume: Path | None = None
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    workers: int = Field(1, ge=0, le=16, description="background threads preparing batches")
    checkpoint_minutes: float = Field(10.0, gt=0)

    @field_validator("proximity")
    @classmethod
    def _proximity(cls, v: float, info: ValidationInfo) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("a finite number >= 1")
        if info.data.get("pdf") == "uniform" and float(v) != int(v):
            raise ValueError("--pdf uniform needs a whole number of frames (tau)")
        return v

    @field_validator("init")
    @classmethod
    def _init_exists(cls, v: str) -> str:
        from tempo_cli import places

        if v in ("imagenet", "random"):
            return v
        if not places.resolve_checkpoint(v).is_file():
            raise ValueError("imagenet, random, or an existing checkpoint file or model name")
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
