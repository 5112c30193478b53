"""Fair comparisons in `tempo eval`: the lr grid, selection on `val`, label subsets of train/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")


@pytest.fixture
def runs_dir() -> Path:
    return Path(os.environ["TEMPO_RUNS_DIR"])


def _metrics(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "metrics.json").read_text())


def _root(tmp_path: Path, demo_root: Path, splits: dict[str, tuple[str, dict[str, str]]]) -> Path:
    """A data root of links to demo class folders: {split: (demo split, {class: demo class})}."""
    root = tmp_path / "data"
    for split, (source, classes) in splits.items():
        for cls, src_cls in classes.items():
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / cls).symlink_to(demo_root / source / src_cls, target_is_directory=True)
    return root


def _grid_run(cli, root: Path, name: str, *extra: str, quiet: bool = True) -> tuple[dict, str]:
    """`eval linear` of random init over lrs 1e-6 and 0.5 -> (metrics.json, stdout)."""
    res = cli(
        "eval", "linear", "--data", root, "--path", "random", "--samples-pc", "5",
        "--lr", "1e-6,0.5", "--runs", "2", "--iterations", "60", "--name", name,
        "--bn-stats", "adapt",  # a random network's features in eval mode are near-constant
        *(TINY if quiet else TINY[:-1]), *extra,
    )  # fmt: skip
    assert res.code == 0, res.err
    return _metrics(Path(os.environ["TEMPO_RUNS_DIR"]), name), res.out


def _best(records: list[dict], key: str) -> float:
    top = max(r[key] for r in records)
    return next(r["lr"] for r in records if r[key] == top)  # ties: the earlier lr


@pytest.mark.slow
def test_lr_and_run_follow_val_when_val_and_test_disagree(
    cli, demo_root: Path, tmp_path: Path, runs_dir: Path
) -> None:
    """val = the test images with the two classes' labels swapped: the lr that learns
    (best on test) is the worst on val, so a choice that follows val differs from test's."""
    # two classes not named as letters: heads have 2 outputs, so a head bad on test is
    # good on the swapped val
    ab = {"one": "A", "two": "B"}
    root = _root(
        tmp_path,
        demo_root,
        {"train": ("train", ab), "test": ("test", ab), "val": ("test", {"one": "B", "two": "A"})},
    )
    out = tmp_path / "clf.pt"
    metrics, _ = _grid_run(cli, root, "val", "--save-model", str(out))
    records = metrics["results"]
    assert [r["lr"] for r in records] == [1e-6, 0.5]
    assert metrics["selected_on"] == "val"
    assert all(r["selected_on"] == "val" for r in records)
    chosen = [r for r in records if r["selected"]]
    assert len(chosen) == 1
    on_val = _best(records, "val_accuracy_final_mean")
    on_test = _best(records, "accuracy_final_mean")
    assert on_val != on_test  # the construction makes them disagree
    assert chosen[0]["lr"] == on_val
    # the saved head is the chosen lr's run picked on val
    from tempo_cli.models.checkpoint import load_model

    meta = load_model(out).meta
    assert meta["lr"] == on_val and meta["selected_on"] == "val"
    assert meta["best_run"] == chosen[0]["best_run"]
    # 5 per class drawn from train/ (no train-5 folder here), listed in the run folder
    assert chosen[0]["train_images"] == 10
    listing = json.loads((runs_dir / "val" / "labelled_files.json").read_text())
    (files,) = listing["5"]["subsets"]
    assert len(files) == 10 and all(f.startswith("train/") for f in files)


@pytest.mark.slow
def test_without_val_the_choice_is_made_on_test_and_marked(
    cli, demo_root: Path, tmp_path: Path
) -> None:
    ab = {"A": "A", "B": "B"}
    root = _root(tmp_path, demo_root, {"train": ("train", ab), "test": ("test", ab)})
    metrics, out = _grid_run(cli, root, "noval", quiet=False)
    records = metrics["results"]
    assert metrics["selected_on"] == "test"
    (chosen,) = [r for r in records if r["selected"]]
    assert chosen["lr"] == _best(records, "accuracy_final_mean")
    assert "val_accuracy_final_mean" not in chosen
    # the table shows both lrs and marks the test-chosen one
    assert "lr 1e-06" in out and "lr 0.5" in out
    assert "†" in out and "chosen on test" in out


def test_grid_records_tensorboard_and_figures(cli, demo_root: Path, runs_dir: Path) -> None:
    res = cli(
        "eval",
        "linear",
        "--data",
        demo_root,
        "--path",
        "random",
        "--samples-pc",
        "1",
        "--lr",
        "0.001,0.01,0.1",
        "--runs",
        "2",
        "--iterations",
        "20",
        "--name",
        "grid",
        *TINY,
    )
    assert res.code == 0, res.err
    metrics = _metrics(runs_dir, "grid")
    assert [(r["samples_pc"], r["lr"]) for r in metrics["results"]] == [
        (1, 0.001),
        (1, 0.01),
        (1, 0.1),
    ]
    assert sum(r["selected"] for r in metrics["results"]) == 1
    for lr in ("0.001", "0.01", "0.1"):
        assert any((runs_dir / "grid" / "1" / f"lr_{lr}").glob("events.out.tfevents.*"))
    assert (runs_dir / "grid" / "curves.png").is_file()
    assert json.loads((runs_dir / "grid" / "config.json").read_text())["lr"] == "0.001,0.01,0.1"


def test_bad_lr_grid_exits_2(cli, demo_root: Path) -> None:
    for bad in ("0.01,-1", "x", "0"):
        res = cli("eval", "linear", "--data", demo_root, "--path", "random", "--lr", bad)
        assert res.code == 2, (bad, res.err)
        assert "--lr" in res.err and "Traceback" not in res.err


def test_subsets_of_train_same_for_a_seed_and_resampled_per_run(
    cli, demo_root: Path, tmp_path: Path, runs_dir: Path
) -> None:
    classes = {c: c for c in ("A", "B", "C")}
    root = _root(tmp_path, demo_root, {"train": ("train", classes), "test": ("test", classes)})

    def run(name: str, *extra: str) -> dict:
        res = cli(
            "eval",
            "linear",
            "--data",
            root,
            "--path",
            "random",
            "--samples-pc",
            "2",
            "--runs",
            "3",
            "--iterations",
            "5",
            "--name",
            name,
            *TINY,
            *extra,
        )
        assert res.code == 0, res.err
        return json.loads((runs_dir / name / "labelled_files.json").read_text())["2"]

    first, again = run("s0"), run("s0b")
    assert first == again and len(first["subsets"]) == 1 and len(first["subsets"][0]) == 6
    other_seed = run("s1", "--seed", "1")
    assert other_seed["subsets"] != first["subsets"]
    resampled = run("r", "--resample-labels")
    subsets = [tuple(s) for s in resampled["subsets"]]
    assert resampled["resampled"] and len(subsets) == 3 and len(set(subsets)) == 3
    rec = _metrics(runs_dir, "r")["results"][0]
    assert "resampled" in rec["labels"]


def test_subset_errors_name_the_problem(cli, demo_root: Path, tmp_path: Path) -> None:
    # more per class than train/ holds: exit 2 naming the short classes
    res = cli("eval", "knn", "--data", demo_root, "--path", "random", "--samples-pc", "1000")
    assert res.code == 2 and "--samples-pc" in res.err and "Traceback" not in res.err
    assert "A (" in res.err
    # only train-N folders (the reference layout) and no train/: the available N are named
    a = {"A": "A"}
    root = _root(tmp_path, demo_root, {"train-1": ("train-1", a), "test": ("test", a)})
    res = cli("eval", "linear", "--data", root, "--path", "random", "--samples-pc", "3")
    assert res.code == 2 and "--samples-pc" in res.err and "available: 1" in res.err
    res = cli(
        "eval",
        "linear",
        "--data",
        root,
        "--path",
        "random",
        "--samples-pc",
        "1",
        "--resample-labels",
    )
    assert res.code == 2 and "--resample-labels" in res.err


@pytest.mark.slow
def test_knn_and_semisup_train_on_the_drawn_subset(
    cli, demo_root: Path, tmp_path: Path, runs_dir: Path
) -> None:
    classes = {c: c for c in ("A", "B")}
    root = _root(
        tmp_path,
        demo_root,
        {"train": ("train", classes), "test": ("test", classes), "val": ("val", classes)},
    )
    res = cli(
        "eval", "knn", "--data", root, "--path", "random", "--samples-pc", "3", "--name", "k", *TINY
    )
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "k")["results"]
    assert rec["k"] == 6  # min(k, training items): the subset, not all of train/
    res = cli(
        "eval",
        "semisup",
        "--data",
        root,
        "--path",
        "random",
        "--samples-pc",
        "2",
        "--runs",
        "2",
        "--iterations",
        "2",
        "--batch-size",
        "4",
        "--name",
        "ss",
        "--resample-labels",
        *TINY,
    )
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "ss")["results"]
    assert rec["train_images"] == 4 and rec["selected_on"] == "val"
    listing = json.loads((runs_dir / "ss" / "labelled_files.json").read_text())
    assert len(listing["2"]["subsets"]) == 2
