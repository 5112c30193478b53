"""`tempo download [asl|models|masks|demo|all]`: options -> DownloadSettings -> the core."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command
from tempo_cli.cli.options import argument, option
from tempo_cli.settings.download import DownloadSettings, Target


def download(
    target: Annotated[Target | None, argument(DownloadSettings, "target")] = None,
    dest: Annotated[Path | None, option(DownloadSettings, "dest", "--dest")] = None,
    url: Annotated[str | None, option(DownloadSettings, "url", "--url")] = None,
    sha256: Annotated[str | None, option(DownloadSettings, "sha256", "--sha256")] = None,
    force: Annotated[bool | None, option(DownloadSettings, "force", "--force")] = None,
    seed: Annotated[int | None, option(DownloadSettings, "seed", "--seed")] = None,
    split: Annotated[str | None, option(DownloadSettings, "split", "--split")] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download the ASL datasets, the model zoo or the hand masks (verified), or make the demo."""
    values = dict(locals())

    from tempo_cli.data.download import run  # lazy: keeps `tempo --help` free of torch

    run_command(DownloadSettings, values, run)
