"""The study file: presets, validation (one line, exit 2 or 1, nothing written), round trip."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.study.runner import plan_study
from tempo_cli.study.spec import load_study, preset_names
from tempo_cli.study.stages import DEFAULT_SAMPLES_PC, selectable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY = """
data = "demo"
backbone = "resnet18"
image_size = 32
stages = ["linear", "knn"]

[pretrain]
init = "random"
epochs = 1

[arms.tempo]
pretrain = { proximity = 5 }

[arms.random]
source = "random"
"""


def _write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_presets_load_and_demo_is_the_issues_comparison() -> None:
    assert preset_names() == ["demo", "reference-r34", "reference-r50"]
    for name in preset_names():
        study = load_study(preset=name)
        assert study.name == name and study.origin == f"preset {name}"
    demo = load_study(preset="demo")
    arms = {a.name: a for a in demo.arms}
    assert list(arms) == ["tempo", "tempo-aug", "image-ssl", "random"]
    assert (arms["tempo"].pretrain["pairs"], arms["tempo"].pretrain["augment"]) == (
        "temporal",
        "none",
    )
    assert (arms["tempo-aug"].pretrain["pairs"], arms["tempo-aug"].pretrain["augment"]) == (
        "temporal", "strong")  # fmt: skip
    assert (arms["image-ssl"].pretrain["pairs"], arms["image-ssl"].pretrain["augment"]) == (
        "same", "strong")  # fmt: skip
    assert arms["random"].source == "random" and demo.baseline == "random"
    assert demo.stages == ("linear", "knn", "embed", "relevance", "lrp", "noise")
    assert demo.stage_options["linear"]["samples_pc"] == "1,5,20,full"
    assert demo.stage_options["linear"]["lr"] == "0.001,0.01,0.1"
    # the explanation stages' classifier: the linear probe's lr grid at the full train split
    assert demo.stage_options["classifier"] == {"lr": "0.001,0.01,0.1"}
    assert demo.classifier_samples_pc == "full"
    r50 = load_study(preset="reference-r50")
    assert r50.stages == selectable() and r50.baseline == "imagenet"
    assert r50.backbone == "resnet50" and r50.image_size == 256
    assert r50.arm("tempo").pretrain["proximity"] == 15


def test_show_preset_prints_a_study_file_that_loads_as_the_preset(cli: Any, tmp_path: Path) -> None:
    r = cli("study", "--show-preset", "demo")
    assert r.code == 0, r.err
    copy = load_study(config=_write(tmp_path, r.out, "demo.toml"))
    assert copy.to_dict() | {"origin": ""} == load_study(preset="demo").to_dict() | {"origin": ""}
    r = cli("study", "--show-preset", "nope")
    assert r.code == 2 and "--show-preset" in r.err and "demo" in r.err


def test_resolved_study_file_round_trips(tmp_path: Path) -> None:
    study = load_study(config=_write(tmp_path, TINY + '\n[linear]\nlr = "0.01,0.1"\n'))
    assert study.name == "tiny"  # the file's stem
    assert study.ddp is False  # the default; `ddp = true` round-trips too (below)
    assert study.stage_options["linear"]["samples_pc"] == DEFAULT_SAMPLES_PC
    text = study.to_toml()
    tomllib.loads(text)
    again = load_study(config=_write(tmp_path, text, "resolved.toml"), name="tiny")
    assert again.to_dict() | {"origin": ""} == study.to_dict() | {"origin": ""}
    ddp = load_study(config=_write(tmp_path, "ddp = true\n" + TINY, "ddp.toml"))
    assert ddp.ddp is True and "ddp = true" in ddp.to_toml() and ddp.to_dict()["ddp"] is True


def test_names_defaults_and_arm_folders(tmp_path: Path) -> None:
    text = TINY.replace("[arms.random]", '[arms."a/b c"]\nsource = "random"\n\n[arms."a b-c"]')
    study = load_study(config=_write(tmp_path, 'name = "mine"\n' + text))
    assert study.name == "mine"
    assert [a.folder for a in study.arms] == ["tempo", "a-b-c", "a-b-c-2"]
    assert study.baseline == "a/b c"  # the first arm that is not a pre-training
    assert load_study(config=_write(tmp_path, TINY), name="other").name == "other"
    tempo = study.arm("tempo")
    assert tempo.is_pretrain and tempo.repeats == 1
    assert tempo.pretrain == {"init": "random", "epochs": 1, "proximity": 5}


BAD: list[tuple[str, str, str]] = [
    ("unknown key", TINY + 'colour = "red"\n', "colour"),
    ("unknown stage", TINY.replace('"knn"]', '"knn", "dance"]'), "dance"),
    ("arm without a source", TINY + "\n[arms.empty]\nrepeats = 1\n", "arms.empty.source"),
    ("unknown baseline", 'baseline = "nobody"\n' + TINY, "nobody"),
    ("stage option", TINY + '\n[linear]\nsamples_pc = "x"\n', "[linear] samples_pc"),
    ("study-set option", TINY + '\n[knn]\npath = "random"\n', "[knn] path"),
    ("pretrain option", TINY.replace("proximity = 5", "proximity = -1"), "proximity"),
    ("repeats", TINY.replace('source = "random"', 'source = "random"\nrepeats = 2'), "repeats"),
    ("arm key", TINY.replace('source = "random"', 'source = "random"\nseeds = 2'), "seeds"),
    ("ddp", 'ddp = "yes"\n' + TINY, "ddp"),
]


@pytest.mark.parametrize(("what", "text", "key"), BAD, ids=[b[0] for b in BAD])
def test_bad_study_files_exit_2_with_one_line_and_write_nothing(
    cli: Any, tmp_path: Path, what: str, text: str, key: str
) -> None:
    with pytest.raises(UsageError) as e:
        plan_study(load_study(config=_write(tmp_path, text)))  # values: checked by planning
    assert key in str(e.value), what
    r = cli("study", "--config", _write(tmp_path, text))
    assert r.code == 2, r.err
    assert r.err.count("\n") == 1 and key in r.err and "Traceback" not in r.err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_unreadable_checkpoint_exits_1_and_writes_nothing(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    text = TINY + f'\n[arms.mine]\ncheckpoint = "{bad.as_posix()}"\n'
    with pytest.raises(TempoError):
        load_study(config=_write(tmp_path, text))
    r = cli("study", "--config", _write(tmp_path, text))
    assert r.code == 1 and r.err.count("\n") == 1 and "broken.pt" in r.err
    missing = TINY + '\n[arms.gone]\ncheckpoint = "no/such/file.pt"\n'
    r = cli("study", "--config", _write(tmp_path, missing))
    assert r.code == 1 and "no/such/file.pt" in r.err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_exactly_one_of_preset_and_config(cli: Any, tmp_path: Path) -> None:
    r = cli("study")
    assert r.code == 2 and "--preset" in r.err
    r = cli("study", "--preset", "demo", "--config", _write(tmp_path, TINY))
    assert r.code == 2 and "exactly one" in r.err
    r = cli("study", "--preset", "demo", "--force", "dance")
    assert r.code == 2 and "--force" in r.err


def test_segment_stage_without_coco_data_fails_before_anything_is_written(
    cli: Any, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"  # a labelled root with no COCO instances beside it
    (plain / "train" / "A").mkdir(parents=True)
    text = f'labelled = "{plain.as_posix()}"\n' + TINY.replace('["linear", "knn"]', '["segment"]')
    r = cli("study", "--config", _write(tmp_path, text))
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "runs" / "tiny").exists()
    # its own data and image size are the segment table's to set (not the study's)
    ok = load_study(config=_write(tmp_path, TINY + '\n[segment]\ndata = "x"\nimage_size = 64\n'))
    assert ok.stage_options.get("segment") is None  # not selected: checked, not kept


#: The study tables that repeat a recipe's command tables (`--recipe NAME`).
_RECIPE_TABLES = {"pretrain": "pretrain", "linear": "eval-linear", "semisup": "eval-semisup"}


@pytest.mark.parametrize("name", ["reference-r34", "reference-r50"])
def test_reference_presets_repeat_their_recipes(name: str) -> None:
    """Each value the recipe sets, the preset of the same name sets alike (as settings)."""
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.recipes import recipe_text
    from tempo_cli.study.presets import preset_text
    from tempo_cli.study.stages import STAGES

    recipe = tomllib.loads(recipe_text(name) or "")
    preset = tomllib.loads(preset_text(name))
    for key in ("backbone", "image_size"):
        assert preset[key] == recipe[key], key
    for table, command in _RECIPE_TABLES.items():
        cls = STAGES[table].settings_cls
        base = {"path": ["random"]} if "path" in cls.model_fields else {}
        want = load_settings(cls, {**base, **recipe[command]})
        got = load_settings(cls, {**base, **preset[table]})
        for key in recipe[command]:
            assert getattr(got, key) == getattr(want, key), (table, key)
