"""`tempo study`: parse options -> StudySettings -> tempo_cli.study.runner.run_study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tempo_cli.cli.common import DebugOpt, QuietOpt
from tempo_cli.cli.options import option
from tempo_cli.settings.study import StudySettings


def _opt(name: str, *decls: str, **kwargs: Any) -> Any:
    return option(StudySettings, name, *decls, **kwargs)


def study(
    preset: Annotated[str | None, _opt("preset", metavar="NAME")] = None,
    config: Annotated[Path | None, _opt("config", "--config", metavar="STUDY.toml")] = None,
    show_preset: Annotated[str | None, _opt("show_preset", metavar="NAME")] = None,
    force: Annotated[list[str] | None, _opt("force", metavar="STAGE")] = None,
    device: Annotated[str | None, _opt("device")] = None,
    name: Annotated[str | None, _opt("name")] = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
) -> None:
    """Run a whole comparison (pre-train, evaluate, explain) as one resumable command.

    Writes runs/<name>/report.html, report.md and study.json. Rerunning the same command
    skips the stages that are done and continues the rest.
    """
    values = dict(locals())
    from tempo_cli.settings import load_settings

    settings = load_settings(StudySettings, values)
    if settings.show_preset is not None:
        from tempo_cli.study.spec import preset_text

        typer.echo(preset_text(settings.show_preset, "--show-preset"), nl=False)
        return
    from tempo_cli.study.runner import run_study  # lazy: keeps `tempo --help` free of torch

    run_study(settings)
