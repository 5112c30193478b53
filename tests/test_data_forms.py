"""The three forms of labelled data on the 120 real photos of asl-sample: a class-folder tree
and a manifest of the same files split alike, `tempo data split` round-trips, and `tempo eval
linear` / `tempo explain lrp` run on both; the feature cache follows the split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tempo_cli.data import ASL_LETTERS
from tempo_cli.data.labelled import list_split
from tempo_cli.data.labelled_data import open_labelled
from tempo_cli.data.splits import SplitOptions

TINY = ("--image-size", "32", "--device", "cpu", "--quiet")


@pytest.fixture(scope="module")
def forms(asl_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The photos as a tree (asl-sample/test) and as a manifest without a split, elsewhere."""
    tree = asl_sample / "test"
    d = tmp_path_factory.mktemp("manifest") / "lists"
    d.mkdir()
    rows = [
        (os.path.relpath(p, d), p.parent.name, "", None)
        for p in sorted(tree.glob("*/*.png"), reverse=True)  # another order: no matter
    ]
    text = "path,label\n" + "".join(f"{r[0]},{r[1]}\n" for r in rows)
    (d / "labels.csv").write_text(text)
    return {"tree": tree, "manifest": d / "labels.csv"}


def _split_of(data) -> dict[str, str]:
    return {e.path.resolve().as_posix(): e.split for e in data.entries()}


def test_tree_and_manifest_split_alike(forms: dict[str, Path]) -> None:
    for seed in (0, 1, 7):
        opts = SplitOptions(seed=seed)
        tree, manifest = open_labelled(forms["tree"], opts), open_labelled(forms["manifest"], opts)
        assert (tree.form, manifest.form) == ("tree", "manifest")
        assert tree.how == manifest.how == "seeded"
        assert _split_of(tree) == _split_of(manifest)
        for split in ("train", "val", "test"):
            files = list_split(tree, split)
            assert files.class_names == list(ASL_LETTERS)
            want = {"train": 3, "val": 1, "test": 1}[split]  # 5 per class at 0.6,0.2,0.2
            assert torch.bincount(files.labels, minlength=24).tolist() == [want] * 24
    assert _split_of(open_labelled(forms["tree"], SplitOptions(seed=1))) != _split_of(
        open_labelled(forms["tree"])
    )


def test_data_split_round_trips(cli, forms: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    r = cli("data", "split", forms["tree"], "--out", a, "--split-seed", "3", "--name", "s")
    assert r.code == 0, r.err
    assert "train: 72 images, 24 classes" in r.err and "seeded" in r.err
    assert cli("data", "split", a, "--out", b, "--quiet").code == 0
    assert a.read_text() == b.read_text()  # a written split reads back as itself
    lines = a.read_text().splitlines()
    assert lines[0] == "path,label,split" and len(lines) == 121
    kept = open_labelled(a)
    assert kept.how == "manifest"
    assert _split_of(kept) == _split_of(open_labelled(forms["tree"], SplitOptions(seed=3)))
    config = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "s" / "config.json").read_text())
    assert config["split_seed"] == 3 and config["split_fractions"] == "0.6,0.2,0.2"
    # bad input: exit 2 with one line, nothing written
    bad = tmp_path / "bad.csv"
    bad.write_text(a.read_text().replace(",test\n", ",holdout\n", 1))
    r = cli("data", "split", bad, "--out", tmp_path / "c.csv")
    assert r.code == 2 and "unknown split 'holdout'" in r.err and "line " in r.err
    assert not (tmp_path / "c.csv").exists() and "Traceback" not in r.err
    r = cli("data", "split", forms["tree"], "--split-fractions", "0.5,0.5")
    assert r.code == 2 and "--split-fractions" in r.err


def _classifier(path: Path) -> Path:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    backbone = build_resnet("resnet18", "random")
    return save_checkpoint(
        path,
        arch="resnet18",
        backbone=backbone,
        linear=torch.nn.Linear(512, 24),
        class_names=list(ASL_LETTERS),
    )


@pytest.mark.slow
def test_eval_and_explain_run_on_tree_and_manifest(
    cli, forms: dict[str, Path], tmp_path: Path
) -> None:
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    for form, data in forms.items():
        r = cli(
            "eval",
            "linear",
            "--path",
            "random",
            "--backbone",
            "resnet18",
            "--data",
            data,
            "--samples-pc",
            "1",
            "--runs",
            "2",
            "--iterations",
            "5",
            "--name",
            f"lin-{form}",
            *TINY,
        )
        assert r.code == 0, r.err
        m = json.loads((runs / f"lin-{form}" / "metrics.json").read_text())
        (rec,) = m["results"]
        assert rec["train_images"] == 24 and rec["test_images"] == 24  # 1 per class; 24 test
        assert m["data_split"]["split"] == "seeded" and m["data_split"]["form"] == form
        assert m["data_split"]["images"]["test"] == {c: 1 for c in ASL_LETTERS}
        drawn = json.loads((runs / f"lin-{form}" / "labelled_files.json").read_text())
        assert len(drawn["1"]["subsets"][0]) == 24
    clf = _classifier(tmp_path / "clf.pt")
    for form, data in forms.items():
        out = tmp_path / f"lrp-{form}"
        r = cli("explain", "lrp", "--path", clf, "--data", data, "--out", out, "--no-sheets", *TINY)
        assert r.code == 0, r.err
        assert len(list(out.rglob("*.png"))) >= 24  # a heatmap per test image


@pytest.mark.slow
def test_feature_cache_key_follows_the_split(forms: dict[str, Path]) -> None:
    from tempo_cli.evaluate.features import FeatureRecipe, FeatureSource
    from tempo_cli.models.backbones import build_resnet

    torch.manual_seed(0)
    net = build_resnet("resnet18")
    recipe = FeatureRecipe(image_size=16)
    seed0 = open_labelled(forms["tree"], SplitOptions(seed=0))
    train, test = FeatureSource("r18-cache-key", lambda: net, seed0, recipe).pair("train")
    assert not train.cached and len(train) == 72 and len(test) == 24
    again = FeatureSource("r18-cache-key", lambda: net, seed0, recipe).pair("train")
    assert all(fs.cached for fs in again)
    seed1 = open_labelled(forms["tree"], SplitOptions(seed=1))
    other = FeatureSource("r18-cache-key", lambda: net, seed1, recipe).pair("train")
    assert not any(fs.cached for fs in other)  # a new seed: new files, never stale features


def test_pretrain_monitor_plans_on_a_tree_and_a_manifest(
    forms: dict[str, Path], tmp_path: Path
) -> None:
    from tempo_cli.pretrain.monitor import plan_monitor
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.pretrain import PretrainSettings

    for form, data in forms.items():
        s = load_settings(
            PretrainSettings,
            {"data": str(tmp_path), "monitor_data": str(data), "monitor_samples_pc": 1},
        )
        plan = plan_monitor(s, tmp_path)
        assert plan.kind == "knn" and str(plan.root) == str(data) and plan.root.form == form
        assert plan.selected_on == "val"  # the made split has a val
