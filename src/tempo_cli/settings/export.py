"""Settings of `tempo export` (a checkpoint -> torchvision, detectron2, reference,
safetensors file or a model folder)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tempo_cli.settings.base import Backbone, CommandSettings


class ExportSettings(CommandSettings):
    """`tempo export --path CKPT --format torchvision|detectron2|reference|safetensors|folder
    --out FILE|DIR [--study runs/NAME --arm ARM]`."""

    command: ClassVar[str] = "export"

    path: str | None = Field(
        None,
        description="Checkpoint: a file, a model folder, a name in the model directory, "
        "random or imagenet. With --study/--arm: default the arm's model.",
    )
    format: Literal["torchvision", "detectron2", "reference", "safetensors", "folder"] = Field(
        description="torchvision (state dict), detectron2 (.pkl), reference (the reference "
        "code's classifier: backbone.N.* + linear.*; needs a linear head), safetensors "
        "(the backbone + metadata, for timm/torchvision), or folder (model.safetensors + "
        "timm's config.json + README.md model card)."
    )
    out: Path = Field(description="File to write (atomically); a folder for --format folder.")
    study: str | None = Field(
        None,
        description="A finished study (runs/NAME): the card and metadata get --arm's "
        "evaluation table (safetensors, folder).",
    )
    arm: str | None = Field(None, description="The study arm the model is (with --study).")
    # Files carry their own architecture.
    backbone: Backbone = Field("resnet34", description="Architecture for --path random|imagenet.")
