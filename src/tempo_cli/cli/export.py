"""`tempo export`: options -> ExportSettings -> tempo_cli.models.export.run (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command
from tempo_cli.cli.options import option
from tempo_cli.settings.export import ExportSettings


def export(
    path: Annotated[str | None, option(ExportSettings, "path")] = None,
    format: Annotated[  # the option is called --format
        str | None, option(ExportSettings, "format", "--format")
    ] = None,
    out: Annotated[Path | None, option(ExportSettings, "out")] = None,
    backbone: Annotated[str | None, option(ExportSettings, "backbone")] = None,
    study: Annotated[str | None, option(ExportSettings, "study")] = None,
    arm: Annotated[str | None, option(ExportSettings, "arm")] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a checkpoint as safetensors, a model folder, torchvision or detectron2 weights.

    A model folder holds model.safetensors, a timm config.json and a model card; --format
    reference writes the reference study's classifier layout."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.models.export import run  # lazy: keeps `tempo --help` free of torch

    run_command(ExportSettings, values, run)
