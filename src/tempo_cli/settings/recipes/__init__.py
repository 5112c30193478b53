"""Named recipes for `--recipe NAME`: the study's settings, one TOML file each, shipped here.

A recipe is read like a `--config` file (top-level keys shared by the commands, tables
such as `[pretrain]` or `[eval-linear]` per command) but sits one layer lower: command
line > `TEMPO_*` > `--config` > recipe > field defaults (`settings.base.RecipeSource`).
A recipe sets the study's hyperparameters only; tempo's deliberate differences from the
reference keep their own options (docs/index.md, "Differences from the reference").
"""

from __future__ import annotations

from importlib import resources

_SUFFIX = ".toml"


def recipe_names() -> tuple[str, ...]:
    """The known recipe names, sorted: the `.toml` files shipped in this package."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[: -len(_SUFFIX)] for f in files if f.name.endswith(_SUFFIX)))


def recipe_text(name: str) -> str | None:
    """The TOML text of recipe `name`, or None when no such recipe is shipped."""
    if name not in recipe_names():
        return None
    return resources.files(__name__).joinpath(name + _SUFFIX).read_text(encoding="utf-8")
