"""Settings resolution: command line > TEMPO_* env > --config TOML > defaults; errors exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest
from pydantic import Field

from tempo_cli.errors import UsageError
from tempo_cli.settings import CommandSettings, load_settings


class ToySettings(CommandSettings):
    command: ClassVar[str] = "toy"
    lr: float = Field(0.001, gt=0)
    epochs: int = Field(15, ge=1)
    pdf: Literal["uniform", "normal"] = "uniform"


def test_defaults() -> None:
    s = load_settings(ToySettings)
    assert (s.lr, s.epochs, s.pdf, s.quiet) == (0.001, 15, "uniform", False)


def test_precedence_cli_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('lr = 0.5\nepochs = 3\npdf = "normal"\n[toy]\nepochs = 4\n')
    s = load_settings(ToySettings, {}, cfg)
    assert (s.lr, s.epochs, s.pdf) == (0.5, 4, "normal")  # command table beats top level
    monkeypatch.setenv("TEMPO_LR", "0.25")
    s = load_settings(ToySettings, {}, cfg)
    assert s.lr == 0.25 and s.epochs == 4
    s = load_settings(ToySettings, {"lr": 0.125, "epochs": None}, cfg)
    assert s.lr == 0.125 and s.epochs == 4  # None = not given on the command line


def test_toml_ignores_other_commands_keys_but_checks_its_own(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("k = 20\n[toy]\nbogus = 1\n")
    with pytest.raises(UsageError) as e:
        load_settings(ToySettings, {}, cfg)
    assert "bogus" in str(e.value)
    cfg.write_text("k = 20\n")
    assert load_settings(ToySettings, {}, cfg).epochs == 15


@pytest.mark.parametrize(
    ("values", "option"),
    [({"lr": -1.0}, "--lr"), ({"epochs": 0}, "--epochs"), ({"pdf": "cauchy"}, "--pdf")],
)
def test_invalid_values_name_option_value_and_rule(values: dict, option: str) -> None:
    with pytest.raises(UsageError) as e:
        load_settings(ToySettings, values)
    msg = str(e.value)
    assert option in msg and str(next(iter(values.values()))) in msg
    assert "\n" not in msg


def test_invalid_env_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPO_EPOCHS", "many")
    with pytest.raises(UsageError, match="--epochs"):
        load_settings(ToySettings)


def test_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--config"):
        load_settings(ToySettings, {}, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    with pytest.raises(UsageError, match="TOML"):
        load_settings(ToySettings, {}, bad)


def test_config_json_round_trip() -> None:
    s = load_settings(ToySettings, {"lr": 0.5})
    d = s.to_json_dict()
    assert d["command"] == "toy" and d["lr"] == 0.5


def test_auto_image_size_from_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tempo_cli.settings.evaluate import EvalKnnSettings

    given = {"path": ["random"]}
    assert load_settings(EvalKnnSettings, given).image_size == "auto"
    cfg = tmp_path / "c.toml"
    cfg.write_text("image_size = 48\n")
    assert load_settings(EvalKnnSettings, given, cfg).image_size == 48
    monkeypatch.setenv("TEMPO_IMAGE_SIZE", "auto")
    assert load_settings(EvalKnnSettings, given, cfg).image_size == "auto"
    assert load_settings(EvalKnnSettings, {**given, "image_size": "64"}, cfg).image_size == 64
    for bad in ("4", "big", "64.5"):
        with pytest.raises(UsageError, match="--image-size.*or auto"):
            load_settings(EvalKnnSettings, {**given, "image_size": bad})


def test_init_is_a_named_baseline_or_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tempo_cli.settings.pretrain import PretrainSettings

    monkeypatch.chdir(tmp_path)
    assert load_settings(PretrainSettings, {"init": "random"}).init == "random"
    with pytest.raises(UsageError, match="--init"):
        load_settings(PretrainSettings, {"init": "no-such.pt"})
    (tmp_path / "mine.pt").write_bytes(b"")
    assert load_settings(PretrainSettings, {"init": "mine.pt"}).init == "mine.pt"
