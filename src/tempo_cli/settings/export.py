"""Settings of `tempo export` (a checkpoint -> torchvision, detectron2 or reference file)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tempo_cli.settings.base import Backbone, CommandSettings


class ExportSettings(CommandSettings):
    """`tempo export --path CKPT --format torchvision|detectron2|reference --out FILE`."""

    command: ClassVar[str] = "export"

    path: str = Field(
        description="Checkpoint: a file, a name in the model directory, random or imagenet."
    )
    format: Literal["torchvision", "detectron2", "reference"] = Field(
        description="torchvision (state dict), detectron2 (.pkl), or reference (the reference "
        "code's classifier: backbone.N.* + linear.*; needs a linear head)."
    )
    out: Path = Field(description="File to write (atomically).")
    # Files carry their own architecture.
    backbone: Backbone = Field("resnet34", description="Architecture for --path random|imagenet.")
