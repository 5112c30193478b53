"""Settings of `tempo export` (a checkpoint -> torchvision or detectron2 weight file)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tempo_cli.settings.base import Backbone, CommandSettings


class ExportSettings(CommandSettings):
    """`tempo export --path CKPT --format torchvision|detectron2 --out FILE`."""

    command: ClassVar[str] = "export"

    path: str = Field(
        description="Checkpoint: a file, a name in the model directory, random or imagenet."
    )
    format: Literal["torchvision", "detectron2"] = Field(
        description="torchvision (state dict) or detectron2 (.pkl)."
    )
    out: Path = Field(description="File to write (atomically).")
    # Files carry their own architecture.
    backbone: Backbone = Field("resnet34", description="Architecture for --path random|imagenet.")
