"""Options every command shares and the one way a command calls its core function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tempo_cli.cli.options import option
from tempo_cli.settings import CommandSettings, load_settings
from tempo_cli.settings.pretrain import PretrainSettings

NameOpt = Annotated[str | None, option(CommandSettings, "name", "--name")]
QuietOpt = Annotated[bool | None, option(CommandSettings, "quiet", "--quiet")]
DebugOpt = Annotated[bool | None, option(CommandSettings, "debug", "--debug")]
# `recipe` is a field of the commands that take it (pretrain, eval *); all share its help.
RecipeOpt = Annotated[str | None, option(PretrainSettings, "recipe", metavar="NAME")]
# Not a setting: where the settings come from.
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
