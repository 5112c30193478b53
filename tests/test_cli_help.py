"""`--help` shows what the settings say, and the CLI layer never imports torch."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer
import typer.rich_utils
from pydantic_core import PydanticUndefined

import tempo_cli.settings.download
import tempo_cli.settings.evaluate
import tempo_cli.settings.explain
import tempo_cli.settings.export
import tempo_cli.settings.pretrain
import tempo_cli.settings.segment  # noqa: F401 - every settings class is a subclass below
from tempo_cli.cli.main import app
from tempo_cli.settings import CommandSettings


def _leaf_commands() -> Iterator[tuple[tuple[str, ...], typer.main.TyperCommand]]:
    """(path, click command) of every runnable command, e.g. (("eval", "linear"), cmd)."""

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield path, cmd
            return
        for name, sub in subs.items():
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def _settings_classes() -> dict[str, type[CommandSettings]]:
    """Every command's settings class by its `command` name (`eval-linear`, `pretrain`)."""
    out: dict[str, type[CommandSettings]] = {}
    todo = list(CommandSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        out.setdefault(cls.command, cls)
    return out


COMMANDS = [path for path, _ in _leaf_commands()]


def test_every_command_has_a_settings_class() -> None:
    settings = _settings_classes()
    assert len(COMMANDS) >= 9
    for path in COMMANDS:
        assert "-".join(path) in settings, path


def _expected_default(param, default: object) -> str | None:
    """What `--help` must show for a field default: nothing for None, [] and off switches."""
    if default is PydanticUndefined or default is None:
        return None
    if isinstance(default, bool):
        if not param.secondary_opts:
            return None if default is False else "on"
        return (param.opts if default else param.secondary_opts)[0].lstrip("-")
    return str(default)


def _rows(help_text: str) -> dict[str, str]:
    """Rich help table rows by their first option or argument name (`--data`, `target`)."""
    rows = {}
    for line in help_text.splitlines():
        m = re.match(r"│\s+(\S+)\s", line)
        if m:
            for name in m.group(1).split(","):
                rows.setdefault(name, line.rstrip(" │"))
    return rows


@pytest.mark.parametrize("path", COMMANDS, ids=["-".join(p) for p in COMMANDS])
def test_help_shows_the_settings_descriptions_and_defaults(
    path: tuple[str, ...], cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)  # one line per option
    r = cli(*path, "--help")
    assert r.code == 0, r.err
    rows = _rows(r.out)
    settings = _settings_classes()["-".join(path)]
    command = dict(_leaf_commands())[path]
    checked = 0
    for param in command.params:
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        first = param.opts[0] if param.param_type_name == "option" else param.name
        row = rows[first]
        shown = re.findall(r"\[default: ([^\]]*)\]", row)
        field = settings.model_fields.get(param.name)
        if field is None:  # --config: where settings come from, not a setting
            assert param.name == "config" and not shown, row
            continue
        assert param.default is None, f"{first}: None = not given, so env and TOML apply"
        assert field.description and field.description in row, (first, row)
        want = _expected_default(param, field.default)
        assert shown == ([] if want is None else [want]), (first, row)
        checked += 1
    assert checked >= 5


def test_context_dependent_defaults_are_words_that_say_what_they_resolve_to() -> None:
    from tempo_cli.settings.evaluate import EvalLinearSettings
    from tempo_cli.settings.explain import ExplainAdversarialSettings, ExplainLrpSettings
    from tempo_cli.settings.pretrain import PretrainSettings

    for cls, extra in (
        (EvalLinearSettings, {"path": ["random"]}),
        (ExplainLrpSettings, {"path": "x.pt"}),
        (PretrainSettings, {}),
    ):
        s = cls(**extra)
        assert s.image_size == "auto" and "auto = " in cls.model_fields["image_size"].description
        assert s.resolved_image_size(None) == 128  # a reference checkpoint records none
        assert s.resolved_image_size(32) == 32
        assert s.image_size_warning(32) is None
        s = cls(**extra, image_size="64")
        assert s.resolved_image_size(32) == 64
        assert "64" in s.image_size_warning(32) and "32" in s.image_size_warning(32)
        assert s.image_size_warning(64) is None and s.image_size_warning(None) is None
    adv = ExplainAdversarialSettings(path="x.pt")
    assert adv.levels == "auto" and adv.level_values() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert ExplainAdversarialSettings(path="x", attack="pgd").level_values()[1] == 0.004


_NO_TORCH = """
import sys
from tempo_cli.cli.main import main
import tempo_cli.cli.main
assert "torch" not in sys.modules, "import tempo_cli.cli.main"
for args in {helps!r}:
    try:
        main([*args, "--help"])
    except SystemExit as e:
        assert not e.code, (args, e.code)
    heavy = sorted(m for m in ("torch", "torchvision", "numpy") if m in sys.modules)
    assert not heavy, (args, heavy)
"""


def test_cli_and_every_help_import_no_torch() -> None:
    """`import tempo_cli.cli.main` and every `--help` in a fresh process stay free of torch."""
    helps = [(), ("eval",), ("explain",), *COMMANDS]
    r = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(helps=helps)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_root_help_lists_the_commands_in_the_order_of_the_work(cli) -> None:
    from tempo_cli.cli.main import ORDER

    r = cli("--help")
    assert r.code == 0, r.err
    listed = [m.group(1) for m in re.finditer(r"^│ (\w+)\s{2,}\S", r.out, re.MULTILINE)]
    listed = [name for name in listed if not name.startswith("-")]
    assert listed == list(ORDER)
    assert set(ORDER) == set(typer.main.get_command(app).commands)


def test_every_command_summary_is_one_sentence_on_one_line() -> None:
    """The first paragraph of each command's help is what `tempo --help` lists."""
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        text = cmd.help or ""
        first = text.strip().split("\n\n")[0]
        assert "\n" not in first and first.endswith(".") and len(first) <= 90, (name, first)


@pytest.mark.parametrize("path", [(), ("eval",), *COMMANDS], ids=lambda p: "-".join(p) or "tempo")
def test_help_shows_no_value_type_beside_a_switch(path: tuple[str, ...], cli) -> None:
    r = cli(*path, "--help")
    assert r.code == 0, r.err
    assert "<bool>" not in r.out
    assert "--help" in r.out


def test_unknown_command_is_one_line_naming_it_once(cli) -> None:
    r = cli("nope")
    assert r.code == 2
    assert r.err == "tempo: error: No such command 'nope'. (see --help)\n"
    r = cli("eval", "nope")
    assert r.code == 2 and r.err.count("No such command 'nope'") == 1
    assert r.err.startswith("tempo: error: tempo eval: ")
