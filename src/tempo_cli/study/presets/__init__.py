"""Packaged study files (`tempo study --preset NAME`): one `<name>.toml` each, shipped here."""

from __future__ import annotations

from importlib import resources

from tempo_cli.errors import UsageError

_PRESETS = __name__


def preset_names() -> list[str]:
    """The shipped presets (`study/presets/<name>.toml`), sorted."""
    files = resources.files(_PRESETS).iterdir()
    return sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml"))


def preset_text(name: str, option: str = "--preset") -> str:
    """The study file of preset `name`; UsageError naming the known ones."""
    if name not in preset_names():
        raise UsageError(option, name, "known presets: " + ", ".join(preset_names()))
    return resources.files(_PRESETS).joinpath(name + ".toml").read_text(encoding="utf-8")
