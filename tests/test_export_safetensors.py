"""`tempo export --format safetensors | folder` with the real timm, torchvision, safetensors;
every `--path` reading them back; renamed pickles refused without being unpickled."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchvision import models as tvm

from tempo_cli.data.labelled import load_split
from tempo_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from tempo_cli.models.backbones import build_resnet
from tempo_cli.models.checkpoint import load_model, save_checkpoint
from tempo_cli.models.content_id import checkpoint_id

SETTINGS = {"data": "/home/me/frames/demo", "pairs": "temporal", "pdf": "normal", "epochs": 2}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A resnet18 product checkpoint (non-default BN statistics, 32 px, pre-training
    settings) and its safetensors file and model folder, exported by the CLI."""
    from tempo_cli.cli.main import main

    base = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    backbone = build_resnet("resnet18")
    with torch.no_grad():
        backbone(torch.randn(8, 3, 32, 32))  # train mode: running stats move off 0/1
    pt = save_checkpoint(
        base / "tempo18.pt",
        arch="resnet18",
        backbone=backbone,
        image_size=32,
        meta={"settings": SETTINGS, "epoch": 2, "step": 6},
    )
    paths = {"pt": pt, "st": base / "tempo18.safetensors", "folder": base / "tempo18-card"}
    for fmt, out in (("safetensors", paths["st"]), ("folder", paths["folder"])):
        with pytest.raises(SystemExit) as e:
            main(["export", "--path", str(pt), "--format", fmt, "--out", str(out), "--quiet"])
        assert e.value.code in (0, None)
    return paths


@pytest.mark.slow  # ~12 s on a busy 2-core machine (timm builds three models)
def test_features_equal_in_timm_torchvision_and_tempo(
    exported: dict[str, Path], demo_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = normalize(load_split(demo_root, "test", 32).images[:12])
    with torch.no_grad():
        ours = load_model(exported["pt"]).backbone.eval()(x)

        # timm's own loading of a local folder: config.json + model.safetensors, strict.
        with caplog.at_level(logging.INFO, logger="timm"):
            folder = timm.create_model(f"local-dir:{exported['folder']}", pretrained=True)
        assert "Missing keys" not in caplog.text and "Unexpected keys" not in caplog.text
        assert folder.num_classes == 0
        strict = timm.create_model("resnet18", pretrained=False, num_classes=0)
        res = strict.load_state_dict(load_file(exported["folder"] / "model.safetensors"))
        assert res.missing_keys == [] and res.unexpected_keys == []
        # the file alone, as the one-liner loads it
        file = timm.create_model(
            "resnet18",
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay=dict(file=str(exported["st"])),
        )
        tv = tvm.resnet18()
        missing, unexpected = tv.load_state_dict(load_file(exported["st"]), strict=False)
        assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]
        tv.fc = torch.nn.Identity()
        for model in (folder, file, tv):
            feats = model.eval()(x)
            assert feats.shape == ours.shape == (12, 512)
            torch.testing.assert_close(feats, ours, atol=1e-5, rtol=0)
    # timm's data config is what the features expect
    cfg = timm.data.resolve_data_config({}, model=folder)
    assert cfg["input_size"] == (3, 32, 32)
    assert tuple(cfg["mean"]) == IMAGENET_MEAN and tuple(cfg["std"]) == IMAGENET_STD


def test_header_config_and_card(exported: dict[str, Path]) -> None:
    with safe_open(str(exported["st"]), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert not any(k.startswith("fc.") for k in keys) and "bn1.num_batches_tracked" in keys
    assert meta["architecture"] == "resnet18" and meta["format"] == "pt"
    assert json.loads(meta["input_size"]) == [3, 32, 32] and meta["image_size"] == "32"
    assert json.loads(meta["mean"]) == list(IMAGENET_MEAN)
    assert json.loads(meta["std"]) == list(IMAGENET_STD)
    assert meta["source_content_id"] == checkpoint_id(exported["pt"])
    assert json.loads(meta["pretrain"]) == SETTINGS and meta["tempo_version"]
    folder = exported["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "\nlicense: unknown\n" in card
    for text in ("## How it was pre-trained", "| neighbour pdf | normal |", "## Limits"):
        assert text in card
    assert "/home/me" not in card  # the data folder's name, not the exporter's disk
    assert 'timm.create_model("local-dir:tempo18-card", pretrained=True)' in card
    # tempo reads both back with what they record
    for key, fmt in (("st", "safetensors"), ("folder", "folder")):
        m = load_model(exported[key])
        assert (m.source_format, m.arch, m.image_size) == (fmt, "resnet18", 32)
        assert m.meta["settings"] == SETTINGS and m.meta["epoch"] == 2
    assert checkpoint_id(folder) == checkpoint_id(folder / "model.safetensors")


def test_reexport_keeps_record_and_existing_folder_keeps_other_files(
    cli, exported: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "clone"
    out.mkdir()
    (out / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (out / "README.md").write_text("old card")
    r = cli("export", "--path", exported["folder"], "--format", "folder", "--out", out)
    assert r.code == 0, r.err
    assert (out / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"
    assert "## How it was pre-trained" in (out / "README.md").read_text()
    assert load_model(out).meta["settings"] == SETTINGS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".clone")]


def _small_labelled(demo: Path, root: Path, classes: int = 6) -> Path:
    """A few of the demo's classes and images (train 8, test 5 each): knn in seconds."""
    for split, n in (("train", 8), ("test", 5)):
        for c in sorted(p.name for p in (demo / split).iterdir())[:classes]:
            (root / split / c).mkdir(parents=True)
            for f in sorted((demo / split / c).iterdir())[:n]:
                shutil.copy(f, root / split / c / f.name)
    return root


@pytest.mark.slow
def test_knn_round_trip_same_accuracy(
    cli, exported: dict[str, Path], demo_root: Path, tmp_path: Path
) -> None:
    """One `tempo eval knn` over the .pt, the .safetensors and a folder (each records
    32 px, so `auto` picks it for all three): the same accuracy. The folder is exported
    from the .safetensors (other header bytes, so another content id: no feature cache
    hit, its weights are loaded)."""
    folder = tmp_path / "from-st"
    r = cli("export", "--path", exported["st"], "--format", "folder", "--out", folder, "--quiet")
    assert r.code == 0, r.err
    paths = [a for p in (exported["pt"], exported["st"], folder) for a in ("--path", p)]
    data = _small_labelled(demo_root, tmp_path / "small")
    common = ("--data", data, "--samples-pc", "1,full", "--device", "cpu", "--quiet")
    r = cli("eval", "knn", *paths, *common, "--name", "rt")
    assert r.code == 0, r.err
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    results = json.loads((runs / "rt" / "metrics.json").read_text())["results"]
    by_spc: dict[int | None, set[float]] = {}
    for rec in results:
        assert rec["image_size"] == 32
        by_spc.setdefault(rec["samples_pc"], set()).add(rec["accuracy_final_mean"])
    assert len(results) == 6 and all(len(v) == 1 for v in by_spc.values()), results


def _hostile(marker: Path) -> object:
    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return {"conv1.weight": torch.zeros(1), "evil": Hostile()}


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "legacy-pickle"])
def test_renamed_torch_file_refused_unpickled(
    cli, tmp_path: Path, demo_root: Path, zip_format: bool
) -> None:
    marker = tmp_path / "ran"
    bad = tmp_path / "model.safetensors"
    torch.save(_hostile(marker), bad, _use_new_zipfile_serialization=zip_format)
    plain = tmp_path / "plain.safetensors"
    torch.save(build_resnet("resnet18").state_dict(), plain)  # a real state dict, renamed
    for path in (bad, plain):
        r = cli("export", "--path", path, "--format", "torchvision", "--out", tmp_path / "o.pth")
        assert r.code == 1 and r.err.count("\n") == 1, r.err
        assert "renamed (refused, not unpickled)" in r.err and str(path) in r.err
    r = cli("eval", "knn", "--path", bad, "--data", demo_root, "--samples-pc", "1")
    assert r.code == 1 and "not unpickled" in r.err
    assert not marker.exists() and not (tmp_path / "o.pth").exists()


def test_bad_inputs_one_line_nothing_written(
    cli, exported: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def refused(path: Path, code: int, *words: str, fmt: str = "folder", o: Path = out) -> None:
        r = cli("export", "--path", path, "--format", fmt, "--out", o)
        assert r.code == code and r.err.count("\n") == 1, r.err
        assert all(w in r.err for w in words), r.err
        assert not out.exists()

    no_config = tmp_path / "no-config"
    shutil.copytree(exported["folder"], no_config)
    (no_config / "config.json").unlink()
    refused(no_config, 1, "no config.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, 1, "no model.safetensors and no config.json")
    wrong_arch = tmp_path / "wrong-arch"
    shutil.copytree(exported["folder"], wrong_arch)
    config = json.loads((wrong_arch / "config.json").read_text())
    (wrong_arch / "config.json").write_text(json.dumps({**config, "architecture": "resnet34"}))
    refused(wrong_arch, 1, "config.json says resnet34", "resnet18 weights")
    unfit = tmp_path / "unfit.safetensors"
    state = load_file(exported["st"])
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    save_file(state, unfit)
    refused(unfit, 1, "unfit.safetensors", "do not fit")
    no_backbone = tmp_path / "head.safetensors"
    save_file({"linear.weight": torch.zeros(24, 512)}, no_backbone)
    refused(no_backbone, 1, "not a ResNet checkpoint")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(exported["st"].read_bytes()[:100_000])
    refused(truncated, 1, "truncated or corrupt")
    # --out: timm tells the format by the suffix; a folder is not written over a file
    refused(exported["pt"], 2, "--out", ".safetensors", fmt="safetensors", o=tmp_path / "x.st")
    refused(exported["pt"], 2, "--out", "not a file", o=exported["pt"])
    for args, words in (
        (("--study", tmp_path), "--study and --arm go together"),
        (("--arm", "tempo"), "--study and --arm go together"),
        (("--study", tmp_path, "--arm", "a"), "study.json"),
    ):
        r = cli("export", "--format", "folder", "--out", out, *args)
        assert r.code == 2 and words in r.err and r.err.count("\n") == 1, r.err
    assert not out.exists()


def _study_json(folder: Path, model: Path) -> None:
    """A finished two-arm study as `tempo study` leaves it (study/collect.py's schema)."""
    (folder / "tempo" / "pretrain").mkdir(parents=True)
    shutil.copy(model, folder / "tempo" / "pretrain" / "model.pt")

    def table(stage: str, ours: float, base: float) -> dict:
        def row(arm: str, mean: float) -> dict:
            cells = {"1": {"mean": mean, "std": 0.01, "n": 3}, "full": {"mean": mean + 0.2}}
            cells["full"].update(std=0.02, n=3)
            return {"arm": arm, "over": "3 probe runs", "cells": cells, "gains": {}}

        rows = [row("tempo", ours), row("random", base)]
        rows[0]["gains"] = {"1": 100 * (ours - base), "full": 100 * (ours - base)}
        return {"stage": stage, "columns": ["1", "full"], "baseline": "random", "rows": rows}

    arms = {
        "tempo": {"folder": "tempo", "source": "pretrain", "repeats": 1, "checkpoint": None},
        "random": {"folder": "random", "source": "random", "repeats": 1, "checkpoint": None},
    }
    arms["tempo"]["runs"] = [{"repeat": None, "dir": "tempo", "stages": {}}]
    study = {"name": "st", "labelled": "demo", "backbone": "resnet18", "image_size": 32}
    data = {"schema": 1, "name": "st", "study": study, "arms": arms}
    data.update(headline=table("linear", 0.5, 0.25), knn=table("knn", 0.4, 0.3))
    (folder / "study.json").write_text(json.dumps(data))


def test_study_arm_card(cli, exported: dict[str, Path], tmp_path: Path) -> None:
    study = tmp_path / "runs" / "st"
    study.mkdir(parents=True)
    _study_json(study, exported["pt"])
    out = tmp_path / "tempo-st"
    r = cli("export", "--study", study, "--arm", "tempo", "--format", "folder", "--out", out)
    assert r.code == 0, r.err
    card = (out / "README.md").read_text()
    assert "### Linear probe accuracy" in card and "### k-NN accuracy" in card
    assert "| tempo | 50.0 ± 1.0 (n=3) | 70.0 ± 2.0 (n=3) |" in card
    assert "| random (baseline) | 25.0 ± 1.0 (n=3) |" in card
    assert "| gain (points) | +25.0 | +25.0 |" in card
    # the arm's model.pt was exported: same weights, its content id recorded
    assert load_model(out).meta["source_content_id"] == checkpoint_id(exported["pt"])
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        evaluation = json.loads(f.metadata()["evaluation"])
    assert evaluation["arm"] == "tempo" and evaluation["tables"][0]["cells"]["1"]["mean"] == 0.5
    assert "model_path" not in evaluation  # no path of the exporter's disk in the header
    r = cli("export", "--study", study, "--arm", "nope", "--format", "folder", "--out", out)
    assert r.code == 2 and "tempo, random" in r.err
    r = cli("export", "--study", study, "--arm", "tempo", "--format", "torchvision", "--out", out)
    assert r.code == 2 and "safetensors or folder" in r.err


def test_model_dir_name_and_study_checkpoint_arm_read_a_folder(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    from tempo_cli.study.spec import load_study

    shutil.copytree(exported["folder"], Path(os.environ["TEMPO_MODEL_DIR"]) / "shared-r18")
    assert load_model("shared-r18").source_format == "folder"
    text = (
        'data = "demo"\nbackbone = "resnet18"\nimage_size = 32\nstages = ["knn"]\n'
        f'[arms.mine]\ncheckpoint = "{exported["folder"].as_posix()}"\n'
    )
    (tmp_path / "s.toml").write_text(text)
    study = load_study(config=tmp_path / "s.toml")
    assert Path(study.arm("mine").checkpoint) == exported["folder"].resolve()
    # its stages' fingerprints hash the folder's weights (a rerun skips, new weights rerun)
    from tempo_cli.study.fingerprint import file_hash

    assert file_hash(exported["folder"]) == file_hash(exported["folder"] / "model.safetensors")


def test_pretrain_starts_from_an_exported_folder(
    cli, exported: dict[str, Path], write_frames, tmp_path: Path
) -> None:
    """`tempo pretrain --init DIR` takes a model folder (its weights, its recorded size);
    a folder without model.safetensors is refused at the option, with exit 2."""
    frames = write_frames(tmp_path / "frames", 8)
    r = cli("pretrain", "--data", frames, "--init", exported["folder"], "--baseline",
            "--image-size", "auto", "--name", "from-folder", "--device", "cpu")  # fmt: skip
    assert r.code == 0, r.err
    out = load_model(Path(os.environ["TEMPO_RUNS_DIR"]) / "from-folder" / "model.pt")
    want = load_model(exported["pt"])
    assert out.image_size == 32
    got, ref = out.backbone.state_dict(), want.backbone.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    (tmp_path / "empty").mkdir()
    r = cli("pretrain", "--data", frames, "--init", tmp_path / "empty", "--baseline")
    assert r.code == 2 and "--init" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_timm_and_torchvision_key_names_are_the_same(arch: str) -> None:
    """What lets one file serve both: timm's ResNet without its classifier has exactly
    torchvision's keys and shapes minus `fc.*` (built on the meta device: no weights)."""
    with torch.device("meta"):
        ours = build_resnet(arch).state_dict()
        timm_state = timm.create_model(arch, pretrained=False, num_classes=0).state_dict()
    assert {k: v.shape for k, v in timm_state.items()} == {k: v.shape for k, v in ours.items()}
