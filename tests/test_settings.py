"""Settings resolution: command line > TEMPO_* env > --config TOML > --recipe > defaults.

Invalid values exit 2 with one line naming the option."""

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


# --- Named recipes (`--recipe`): command line > TEMPO_* > --config > recipe > defaults ---

#: SPEC.md's protocols: what each recipe must resolve to, command by command.
R34_PRETRAIN = {
    "backbone": "resnet34",
    "image_size": 128,
    "init": "imagenet",
    "epochs": 15,
    "lr": 1e-3,
    "l": 1e-3,
    "pdf": "uniform",
    "proximity": 30,
    "batch_size": 200,
    "optimizer": "sgd",
    "momentum": 0.0,
    "weight_decay": 1e-3,
}
R50_PRETRAIN = {
    **R34_PRETRAIN,
    "backbone": "resnet50",
    "image_size": 256,
    "epochs": 10,
    "lr": 1e-4,
    "proximity": 15,
    "batch_size": 20,
}
R34_LINEAR = {"runs": 10, "iterations": 3000, "batch_size": 24, "lr": 0.01, "weight_decay": 1e-4}
R34_SEMISUP = {"runs": 10, "iterations": 200, "batch_size": 128, "lr": 0.01, "eval_every": 1}
RECIPES = {
    "reference-r34": {
        "pretrain": R34_PRETRAIN,
        "eval-linear": {"backbone": "resnet34", "image_size": 128, **R34_LINEAR},
        "eval-semisup": {"backbone": "resnet34", "image_size": 128, **R34_SEMISUP},
        "eval-knn": {"backbone": "resnet34", "image_size": 128},
    },
    "reference-r50": {
        "pretrain": R50_PRETRAIN,
        # The ResNet-50 probe used batches of 20; 256 px = the 256x256 frames unresized.
        "eval-linear": {
            "backbone": "resnet50",
            "image_size": 256,
            **R34_LINEAR,
            "batch_size": 20,
            "bn_batch_size": "20,20",  # BatchNorm batches of 20 for train and test images
        },
        "eval-semisup": {"backbone": "resnet50", "image_size": 256, **R34_SEMISUP},
        "eval-knn": {"backbone": "resnet50", "image_size": 256},
    },
}


def _command_classes() -> dict[str, type[CommandSettings]]:
    from tempo_cli.settings.evaluate import (
        EvalKnnSettings,
        EvalLinearSettings,
        EvalSemisupSettings,
    )
    from tempo_cli.settings.pretrain import PretrainSettings

    classes = (PretrainSettings, EvalLinearSettings, EvalSemisupSettings, EvalKnnSettings)
    return {cls.command: cls for cls in classes}


def _given(command: str) -> dict:
    return {} if command == "pretrain" else {"path": ["random"]}


def test_the_shipped_recipes_are_the_known_names() -> None:
    from tempo_cli.settings.recipes import recipe_names

    assert recipe_names() == tuple(sorted(RECIPES))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("command", ["pretrain", "eval-linear", "eval-semisup", "eval-knn"])
def test_each_recipe_resolves_to_the_reference_protocol(recipe: str, command: str) -> None:
    cls = _command_classes()[command]
    s = load_settings(cls, {**_given(command), "recipe": recipe})
    want = RECIPES[recipe][command]
    got = {k: getattr(s, k) for k in want}
    if command == "eval-linear" and "lr" in want:  # eval linear's --lr is a grid
        got["lr"] = s.lr_grid()
        want = {**want, "lr": (want["lr"],)}
    assert got == want
    assert s.recipe == recipe and s.to_json_dict()["recipe"] == recipe  # config.json says so
    # The recipe's values are explicit, so a checkpoint's recorded size does not replace them.
    assert s.resolved_image_size(64) == want["image_size"]
    plain = load_settings(cls, _given(command))
    changed = {k for k in want if getattr(plain, k) != want[k]}
    if recipe == "reference-r50":  # differs from the defaults where SPEC.md says it does
        assert {"backbone", "image_size"} <= changed


def test_reference_r50_size_leaves_the_256_px_frames_unresized() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from tempo_cli.data.transforms import to_uint8_tensor
    from tempo_cli.settings.evaluate import EvalLinearSettings

    s = load_settings(EvalLinearSettings, {"path": ["random"], "recipe": "reference-r50"})
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = to_uint8_tensor(Image.fromarray(pixels), s.resolved_image_size(None))
    assert torch.equal(out, torch.from_numpy(pixels).permute(2, 0, 1))


def test_recipe_precedence_cli_over_env_over_config_over_recipe_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tempo_cli.settings.pretrain import PretrainSettings

    r50 = {"recipe": "reference-r50"}
    s = load_settings(PretrainSettings, r50)
    assert (s.epochs, s.lr, s.batch_size, s.seed) == (10, 1e-4, 20, 0)  # seed: not in recipe
    cfg = tmp_path / "c.toml"
    # A top-level key of --config beats the recipe's [pretrain] table: layers, not tables.
    cfg.write_text("batch_size = 64\n[pretrain]\nepochs = 7\n")
    s = load_settings(PretrainSettings, r50, cfg)
    assert (s.epochs, s.lr, s.batch_size) == (7, 1e-4, 64)
    monkeypatch.setenv("TEMPO_EPOCHS", "5")
    s = load_settings(PretrainSettings, r50, cfg)
    assert (s.epochs, s.lr, s.batch_size) == (5, 1e-4, 64)
    s = load_settings(PretrainSettings, {**r50, "epochs": 3}, cfg)
    assert (s.epochs, s.lr, s.batch_size) == (3, 1e-4, 64)
    monkeypatch.delenv("TEMPO_EPOCHS")
    assert load_settings(PretrainSettings, {}, cfg).lr == 1e-3  # no recipe: the default


def test_recipe_name_from_env_or_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tempo_cli.settings.evaluate import EvalLinearSettings

    given = {"path": ["random"]}
    cfg = tmp_path / "c.toml"
    cfg.write_text('[eval-linear]\nrecipe = "reference-r50"\n')
    assert load_settings(EvalLinearSettings, given, cfg).batch_size == 20
    monkeypatch.setenv("TEMPO_RECIPE", "reference-r34")
    s = load_settings(EvalLinearSettings, given, cfg)  # env beats the file's name
    assert (s.recipe, s.batch_size, s.backbone) == ("reference-r34", 24, "resnet34")
    s = load_settings(EvalLinearSettings, {**given, "recipe": "reference-r50"}, cfg)
    assert (s.recipe, s.batch_size, s.image_size) == ("reference-r50", 20, 256)


def test_unknown_recipe_is_a_usage_error_listing_the_known_ones(cli) -> None:
    from tempo_cli.settings.pretrain import PretrainSettings

    with pytest.raises(UsageError) as e:
        load_settings(PretrainSettings, {"recipe": "reference-r18"})
    msg = str(e.value)
    assert "--recipe" in msg and "reference-r18" in msg
    assert "reference-r34" in msg and "reference-r50" in msg
    for args in (("pretrain",), ("eval", "linear", "--path", "random"), ("eval", "knn")):
        r = cli(*args, "--recipe", "r50")
        assert r.code == 2, (args, r.out, r.err)
        line = (r.err + r.out).strip()
        assert "--recipe" in line and "reference-r34, reference-r50" in line, line
        assert "\n" not in line


def test_recipe_values_give_way_to_resumed_settings_but_given_options_win() -> None:
    """`--resume` restores the saved run; a recipe is a layer of defaults, not options given."""
    from tempo_cli.settings.pretrain import RUNTIME_FIELDS, PretrainSettings
    from tempo_cli.training.resume import merge_resumed_settings

    saved = load_settings(PretrainSettings, {"recipe": "reference-r34", "epochs": 20})
    now = load_settings(PretrainSettings, {"recipe": "reference-r50", "lr": 0.5})
    assert now.model_fields_set == {"lr"}
    resumed = merge_resumed_settings(now, saved.model_dump(), RUNTIME_FIELDS)
    assert (resumed.recipe, resumed.backbone, resumed.epochs, resumed.batch_size) == (
        "reference-r34",
        "resnet34",
        20,
        200,
    )
    assert resumed.lr == 0.5
    # Resuming a recipe run with nothing given keeps every saved value.
    r50 = load_settings(PretrainSettings, {"recipe": "reference-r50"})
    plain = merge_resumed_settings(load_settings(PretrainSettings), r50.model_dump(), ())
    assert plain.model_dump() == r50.model_dump()


def test_commands_without_a_recipe_field_ignore_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPO_RECIPE", "reference-r50")
    cfg = tmp_path / "c.toml"
    cfg.write_text('recipe = "reference-r50"\n')
    s = load_settings(ToySettings, {}, cfg)
    assert (s.lr, s.epochs) == (0.001, 15)


def test_the_recipes_ship_in_the_wheel(tmp_path: Path) -> None:
    """pyproject.toml must list them as package data, or an installed tempo has no recipes."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    # A clean copy: an egg-info left by `pip install -e` would list the files by itself.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(repo / "src", src, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, tmp_path / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", "-w", str(tmp_path / "dist"), str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in RECIPES:
        assert f"tempo_cli/settings/recipes/{recipe}.toml" in names


def test_a_recipe_run_records_its_values_and_resumes_with_them(cli, tmp_path: Path) -> None:
    """`--recipe` on the command line reaches config.json; `--resume` alone brings it back."""
    import json
    import os

    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(24):
        Image.new("RGB", (32, 32), (10 * i, 0, 255 - 10 * i)).save(frames / f"{i:03d}.png")
    tiny = ("--init", "random", "--backbone", "resnet18", "--image-size", "32", "--device", "cpu")
    r = cli(
        "pretrain",
        "--data",
        frames,
        "--quiet",
        *tiny,
        "--name",
        "r50",
        "--max-steps",
        "1",
        "--recipe",
        "reference-r50",
    )
    assert r.code == 0, r.err
    run_dir = Path(os.environ["TEMPO_RUNS_DIR"]) / "r50"
    config = json.loads((run_dir / "config.json").read_text())
    want = {"recipe": "reference-r50", "epochs": 10, "lr": 1e-4, "batch_size": 20, "proximity": 15}
    want |= {"init": "random", "backbone": "resnet18", "image_size": 32}  # given: they win
    assert {k: config[k] for k in want} == want
    r = cli("pretrain", "--resume", run_dir / "last.pt", "--max-steps", "2", "--quiet")
    assert r.code == 0, r.err
    resumed = json.loads((run_dir / "config.json").read_text())
    assert {k: resumed[k] for k in want} == want and resumed["max_steps"] == 2
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 2
