"""Typer options made from settings fields: help and shown default are written once, there.

Every command parameter defaults to None (= not given), so that settings resolution
(command line > TEMPO_* environment > --config TOML > field default) stays with
`tempo_cli.settings`; `--help` shows the field's description and its default.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.markup import escape
from typer.rich_utils import DEFAULT_STRING  # typer's own words for a shown default

from tempo_cli.settings import CommandSettings


def shown_default(field: FieldInfo, decls: tuple[str, ...] = ()) -> str | None:
    """The default as `--help` shows it; None when it shows none.

    None shows for required fields, absent values (None, empty lists) and off switches
    (`--quiet`); an on/off pair (`--sheets/--no-sheets`) shows the switch that is on.
    """
    default = field.default
    if default is PydanticUndefined or default is None:
        return None
    if isinstance(default, bool):
        pair = next((d for d in decls if "/" in d), None)
        if pair is None:
            return "on" if default else None
        on, off = (d.strip().lstrip("-") for d in pair.split("/", 1))
        return on if default else off
    return str(default)


def help_text(settings: type[CommandSettings], name: str, decls: tuple[str, ...] = ()) -> str:
    """The help of a settings field: its description, then its shown default (rich markup)."""
    field = settings.model_fields[name]
    if not field.description:
        raise ValueError(f"{settings.__name__}.{name} has no description (its --help text)")
    text = field.description
    default = shown_default(field, decls)
    if default is not None:
        text += " " + DEFAULT_STRING.format(default)
    return escape(text)


def option(
    settings: type[CommandSettings],
    name: str,
    *decls: str,
    panel: str | None = None,
    **kwargs: Any,
) -> Any:
    """`typer.Option` of the field `name` of `settings` (use in `Annotated[..., option(...)]`).

    `decls` are the option names when they are not simply `--<name>` (aliases, on/off pairs).
    """
    return typer.Option(
        *decls,
        help=help_text(settings, name, decls),
        show_default=False,
        rich_help_panel=panel,
        **kwargs,
    )


def argument(settings: type[CommandSettings], name: str, **kwargs: Any) -> Any:
    """`typer.Argument` of the field `name` of `settings`."""
    return typer.Argument(help=help_text(settings, name), show_default=False, **kwargs)
