"""Checks every part of a study file shares: one line naming the key, or a value accepted.

A study file's tables hold options of tempo's commands; `options` checks their keys against
the command's settings and `settings_from` builds those settings, so a bad value fails as
the command would fail, named by the study file's key.
"""

from __future__ import annotations

from typing import Any

from tempo_cli.errors import UsageError
from tempo_cli.settings.base import CommandSettings, load_settings

#: Fields the study sets on every stage's settings; a stage table may not set them.
STUDY_SET = frozenset(
    {"path", "data", "name", "quiet", "debug", "backbone", "image_size", "seed", "device"}
    | {"save_model", "compare", "out", "resume", "recipe", "init_only"}
    | {"split_fractions", "split_seed", "group_by"}  # one split for every stage: top level
)


def need(cond: bool, key: str, value: Any, allowed: str) -> None:
    """UsageError(key, value, allowed) unless `cond`."""
    if not cond:
        raise UsageError(key, value, allowed)


def settings_from(cls: type[CommandSettings], values: dict[str, Any], table: str) -> Any:
    """`cls` built from `values`; a bad value is a UsageError naming the study key."""
    try:
        return load_settings(cls, values)
    except UsageError as e:
        key = e.option.removeprefix("--").replace("-", "_")
        raise UsageError(f"{table}{key}" if table else key, e.value, e.allowed) from None


def table_of(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The table `key` of `data` (empty when absent)."""
    value = data.get(key, {})
    need(isinstance(value, dict), key, value, "a table, e.g. [" + key + "]")
    return value


def checked_options(
    table: dict[str, Any], cls: type[CommandSettings], where: str, own: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A stage table's keys, checked against `cls`'s fields and the study's own."""
    out: dict[str, Any] = {}
    fields = set(cls.model_fields)
    for key, value in table.items():
        name = key.replace("-", "_")
        set_by_study = name in STUDY_SET and name not in own
        allowed = ", ".join(sorted(fields - STUDY_SET))
        need(name in fields and not set_by_study, f"[{where}] {key}", value, "allowed: " + allowed)
        out[name] = value
    return out
