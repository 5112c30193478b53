"""`--resume`: a resumed run takes its settings from the checkpoint, except options given now.

Options given now (command line, TEMPO_*, --config: pydantic's `model_fields_set`) win,
e.g. `--epochs 30` extends a pre-training run; the fields in `runtime_fields` describe how
this invocation runs (device, workers, quiet, ...) and are never taken from the file.
Each trainer names its own runtime fields beside its loop.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

from tempo_cli.settings.base import CommandSettings

S = TypeVar("S", bound=CommandSettings)


def merge_resumed_settings(
    settings: S, saved: dict[str, Any], runtime_fields: Collection[str]
) -> S:
    """The settings of a resumed run: `saved` (a settings dump), except options given now."""
    update = {
        k: v
        for k, v in saved.items()
        if k in type(settings).model_fields
        and k not in settings.model_fields_set
        and k not in runtime_fields
    }
    # No validation on purpose: e.g. the original --init file may be gone.
    return settings_with(settings, **update)


def settings_with(settings: S, **update: Any) -> S:
    """`settings` with fields replaced (unvalidated), still knowing which were given now."""
    changed = settings.model_copy(update=update)
    changed.__pydantic_fields_set__ = set(settings.model_fields_set)
    return changed
