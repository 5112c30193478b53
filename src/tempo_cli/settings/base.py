"""Settings resolution: command line > `TEMPO_*` environment > `--config FILE.toml` >
`--recipe NAME` > defaults.

Each command defines a subclass of `CommandSettings` with its own fields and
`command` name. `load_settings(cls, cli_values, config_file)` builds one, turning
every validation problem into a `UsageError` (exit 2, one line).

The TOML file may hold top-level keys (shared by all commands; keys that are not
fields of this command are ignored) and a table named after the command, e.g.
`[pretrain]` or `[eval-linear]`, whose keys must all be fields of that command.
A recipe (`settings/recipes/NAME.toml`, shipped in the package) has the same layout;
commands with a `recipe` field take its name from any layer above it.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tempo_cli.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("tempo_config_file", default=None)


class TomlSource(PydanticBaseSettingsSource):
    """Values from the `--config` TOML file (lowest priority above defaults)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.values = _read_toml(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def _read_toml(settings_cls: type[BaseSettings]) -> dict[str, Any]:
    path = _CONFIG_FILE.get()
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("--config", str(path), "no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError("--config", str(path), f"not a readable TOML file: {e}") from None
    return _command_values(data, settings_cls)


def _command_values(data: dict[str, Any], settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The values of a parsed settings file for `settings_cls`: top level, then its table."""
    fields = settings_cls.model_fields
    command = getattr(settings_cls, "command", "")
    values = {k.replace("-", "_"): v for k, v in data.items() if not isinstance(v, dict)}
    values = {k: v for k, v in values.items() if k in fields}
    table = data.get(command, {})
    if isinstance(table, dict):
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in fields:
                allowed = ", ".join(sorted(fields))
                raise UsageError(f"[{command}] {key}", value, f"not an option; allowed: {allowed}")
            values[name] = value
    return values


#: Fields whose value came from the recipe alone (filled by `RecipeSource` in `load_settings`).
_FROM_RECIPE: ContextVar[set[str] | None] = ContextVar("tempo_from_recipe", default=None)


class RecipeSource(PydanticBaseSettingsSource):
    """Values of the named recipe (`--recipe`): below `--config`, above defaults.

    The name is the `recipe` field as the layers above give it (command line, `TEMPO_RECIPE`,
    `--config`); commands without that field never read a recipe.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], above: tuple[PydanticBaseSettingsSource, ...]
    ) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        if "recipe" not in settings_cls.model_fields:
            return
        layers = [source() for source in above]
        name = next((layer["recipe"] for layer in layers if layer.get("recipe") is not None), None)
        if name is None:
            return
        self.values = read_recipe(str(name), settings_cls)
        given_above = set().union(*layers)
        from_recipe = _FROM_RECIPE.get()
        if from_recipe is not None:  # the name belongs to the recipe layer it selects
            from_recipe.update({"recipe"} | {k for k in self.values if k not in given_above})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def read_recipe(name: str, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The values recipe `name` gives `settings_cls`; an unknown name is a UsageError (exit 2)."""
    from tempo_cli.settings.recipes import recipe_names, recipe_text

    text = recipe_text(name)
    if text is None:
        raise UsageError("--recipe", name, "known recipes: " + ", ".join(recipe_names()))
    values = _command_values(tomllib.loads(text), settings_cls)
    values.pop("recipe", None)  # a recipe names no other recipe
    return values


class CommandSettings(BaseSettings):
    """Options every command shares."""

    command: ClassVar[str] = "tempo"

    model_config = SettingsConfigDict(
        env_prefix="TEMPO_",
        extra="forbid",
        validate_default=True,
        validate_assignment=True,
    )

    name: str | None = Field(
        None, description="Run folder name: runs/<name>/ (absent: the command and the time)."
    )
    quiet: bool = Field(False, description="No progress bars or per-epoch lines.")
    debug: bool = Field(False, description="Show full tracebacks on errors (or TEMPO_DEBUG=1).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlSource(settings_cls)
        recipe = RecipeSource(settings_cls, (init_settings, env_settings, toml))
        return (init_settings, env_settings, toml, recipe)

    def to_json_dict(self) -> dict[str, Any]:
        """The resolved settings as saved in `runs/<name>/config.json`."""
        return {"command": self.command, **self.model_dump(mode="json")}


T = TypeVar("T", bound=CommandSettings)

#: The word of a default that depends on context (what it resolves to is in the field's help).
AUTO = "auto"

#: The ResNets tempo builds.
Backbone = Literal["resnet18", "resnet34", "resnet50"]
Device = Literal["auto", "cpu", "cuda", "mps"]


def device_field() -> Any:
    """The `--device` field of every command that computes."""
    return Field(AUTO, description="cpu, cuda or mps; auto = cuda, else mps, else cpu.")


def recipe_field() -> Any:
    """The `--recipe` field: a named set of the study's settings, applied below `--config`."""
    from tempo_cli.settings.recipes import recipe_names

    return Field(
        None,
        description=f"The study's settings by name ({', '.join(recipe_names())}), below the "
        "command line, TEMPO_* and --config.",
    )


def image_size_field(low: int, high: int) -> Any:
    """The type of an `--image-size` that may be `auto`: a side in [low, high] pixels or "auto"."""
    rule = f"a side in pixels between {low} and {high}, or auto"

    def check(value: Any) -> int | str:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        try:
            side = int(value)
        except (TypeError, ValueError):
            raise ValueError(rule) from None
        if isinstance(value, bool) or side != float(value) or not low <= side <= high:
            raise ValueError(rule)
        return side

    return Annotated[int | Literal["auto"], BeforeValidator(check)]


class RecordedImageSize:
    """For settings whose `image_size` may be `auto`: the size the checkpoint records.

    Every checkpoint tempo writes records the input size it was trained or probed at;
    reference checkpoints (and `imagenet`, `random`) record none and get
    `fallback_image_size`, the default from before sizes were recorded.
    """

    fallback_image_size: ClassVar[int] = 128
    if TYPE_CHECKING:  # the field itself is declared by each settings class
        image_size: int | str

    def resolved_image_size(self, recorded: int | None) -> int:
        """The explicit `--image-size`, else `recorded` (the checkpoint's), else the fallback."""
        if self.image_size != AUTO:
            return int(self.image_size)
        return int(recorded) if recorded is not None else self.fallback_image_size

    def image_size_warning(self, recorded: int | None, what: str = "the checkpoint") -> str | None:
        """A one-line warning when an explicit size differs from the recorded one, else None."""
        if self.image_size == AUTO or recorded is None or int(self.image_size) == int(recorded):
            return None
        return (
            f"--image-size {self.image_size} differs from the {recorded} px {what} was trained "
            f"at (--image-size auto uses {recorded})"
        )


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def load_settings(
    cls: type[T], cli_values: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> T:
    """Build `cls` from CLI values (None = not given), environment, TOML file and recipe.

    Raises UsageError naming the first invalid option, its value and what is allowed.
    A recipe's values (and its name) are left out of `model_fields_set`: like defaults,
    a `--resume`d run's saved settings replace them, while the options given now still win.
    """
    given = {k: v for k, v in (cli_values or {}).items() if v is not None}
    token = _CONFIG_FILE.set(Path(config_file) if config_file else None)
    from_recipe: set[str] = set()
    recipe_token = _FROM_RECIPE.set(from_recipe)
    try:
        settings = cls(**given)
        settings.__pydantic_fields_set__ -= from_recipe
        return settings
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        value = err.get("input")
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        raise UsageError(option_name(field), value, msg) from None
    finally:
        _CONFIG_FILE.reset(token)
        _FROM_RECIPE.reset(recipe_token)
