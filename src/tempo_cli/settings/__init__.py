"""Validated settings, one pydantic model per command (see `base.CommandSettings`)."""

from tempo_cli.settings.base import CommandSettings, load_settings

__all__ = ["CommandSettings", "load_settings"]
