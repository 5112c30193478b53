"""`tempo download [asl|models|demo|all]`: parse options, build DownloadSettings, call the core."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command


class Target(str, Enum):
    """What `tempo download` fetches."""

    asl = "asl"
    models = "models"
    demo = "demo"
    all = "all"


def download(
    target: Annotated[
        Target | None,
        typer.Argument(
            help="asl: the ASL datasets (ASL-big, ASL_mask) into the data dir; models: the "
            "model zoo into the model dir; demo: generate the offline demo dataset; "
            "all: demo, asl and models (the default).",
            show_default=False,
        ),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            "--dest",
            help="Put it here instead of the data dir (asl, demo) or the model dir (models).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Fetch the archive from this http(s):// or file:// URL instead of Google "
            "Drive (a mirror, or an archive copied by hand). One target only.",
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected SHA-256 of the archive (64 hex digits)."),
    ] = None,
    force: Annotated[
        bool | None,
        typer.Option("--force", help="Download (or generate) again even if already present."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the generated demo dataset (default 0).")
    ] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download the ASL datasets or the model zoo (verified, resumable), or make the demo."""
    from tempo_cli.data.download import run
    from tempo_cli.settings.download import DownloadSettings

    values = dict(locals())
    values.pop("run")
    values.pop("DownloadSettings")
    values["target"] = target.value if target is not None else None
    run_command(DownloadSettings, values, run)


def register(app: typer.Typer) -> None:
    """Add `tempo download` to the application."""
    app.command("download")(download)
