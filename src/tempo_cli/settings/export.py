"""Settings of `tempo export` (a checkpoint -> torchvision or detectron2 weight file)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from tempo_cli.settings.base import CommandSettings


class ExportSettings(CommandSettings):
    """`tempo export --path CKPT --format torchvision|detectron2 --out FILE`."""

    command: ClassVar[str] = "export"

    path: str
    format: Literal["torchvision", "detectron2"]
    out: Path
    # Only for --path random|imagenet (files carry their own architecture).
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet34"
