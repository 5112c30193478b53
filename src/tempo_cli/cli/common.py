"""Options every command shares and the one way a command calls its core function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tempo_cli.settings import CommandSettings, load_settings

NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="Run folder name: runs/<name>/ (default: command+time)."),
]
QuietOpt = Annotated[
    bool | None, typer.Option("--quiet", help="No progress bars or per-epoch lines.")
]
DebugOpt = Annotated[
    bool | None, typer.Option("--debug", help="Show full tracebacks on errors (or TEMPO_DEBUG=1).")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file of option values (below command line and TEMPO_*)."),
]

S = TypeVar("S", bound=CommandSettings)


def run_command(settings_cls: type[S], values: dict[str, Any], core: Callable[[S], Any]) -> Any:
    """Validate `values` (the command's parameters; None = not given) and call `core`.

    `values` may hold `config` (the `--config` file); it is not a setting.
    """
    values = dict(values)
    config = values.pop("config", None)
    settings = load_settings(settings_cls, values, config)
    return core(settings)
