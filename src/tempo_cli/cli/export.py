"""`tempo export`: options -> ExportSettings -> tempo_cli.models.export.run (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command


def export(
    path: Annotated[
        str | None,
        typer.Option(help="Checkpoint: a file, a name in the model directory, random or imagenet."),
    ] = None,
    format: Annotated[  # noqa: A002 - the option is called --format
        str | None,
        typer.Option("--format", help="torchvision (state dict) or detectron2 (.pkl)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="File to write (atomically).")] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="Architecture for --path random|imagenet. \\[default: resnet34]"),
    ] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a checkpoint as a plain torchvision ResNet state dict or a detectron2 .pkl."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.models.export import run  # lazy: keeps `tempo --help` free of torch
    from tempo_cli.settings.export import ExportSettings

    run_command(ExportSettings, values, run)


def register(app: typer.Typer) -> None:
    """Attach `tempo export` to the application."""
    app.command("export")(export)
