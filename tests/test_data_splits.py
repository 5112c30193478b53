"""Made splits (seeded, stratified, group-aware), manifests and the class-folder tree: the
rules and every "Bad input" line, on tiny files (quick)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tempo_cli.data.labelled import available_splits, class_names, list_split
from tempo_cli.data.labelled_data import open_labelled
from tempo_cli.data.manifest import read_manifest, write_manifest
from tempo_cli.data.splits import SplitItem, SplitOptions, make_split, parse_fractions, split_counts
from tempo_cli.errors import TempoError, UsageError


def _image(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value % 256, np.uint8)).save(path)
    return path


def _tree(root: Path, spec: dict[str, int], groups: tuple[str, ...] = ()) -> Path:
    """root/<CLASS>/[<GROUP>/]<k>.png: spec = images per class (per group with groups)."""
    for c, n in spec.items():
        for g in groups or ("",):
            for k in range(n):
                _image(root / c / g / f"{g}{k}.png", k)
    return root


# --- the split rule ------------------------------------------------------------------------


def test_counts_round_halves_up_and_keep_one_each() -> None:
    f = (0.6, 0.2, 0.2)
    assert split_counts(3, f) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(5, f) == {"train": 3, "val": 1, "test": 1}
    assert split_counts(10, f) == {"train": 6, "val": 2, "test": 2}
    assert split_counts(8, f) == {"train": 4, "val": 2, "test": 2}  # 1.6 -> 2
    assert split_counts(4, (0.1, 0.45, 0.45)) == {"train": 1, "val": 1, "test": 2}
    assert split_counts(2, (0.8, 0.0, 0.2)) == {"train": 1, "val": 0, "test": 1}


def test_fractions_parse_and_reject() -> None:
    assert parse_fractions("0.7, 0.1, 0.2") == (0.7, 0.1, 0.2)
    for bad in ("0.5,0.5", "0.6,0.2,0.3", "0,0.5,0.5", "0.8,0.2,0", "a,b,c", "1.2,-0.1,-0.1"):
        with pytest.raises(ValueError):
            parse_fractions(bad)


def test_split_is_pure_stratified_and_prefix_free() -> None:
    items = [SplitItem(c, f"{c}/{k:02d}.png") for c in "ABC" for k in range(10)]
    opts = SplitOptions(seed=3)
    got = make_split(items, opts)
    assert got == make_split(list(reversed(items)), opts)[::-1]  # order of listing: no matter
    moved = [SplitItem(i.label, "../x/" + i.rel) for i in items]
    assert make_split(moved, opts) == got  # a common prefix (a manifest elsewhere): no matter
    for c in "ABC":
        per = Counter(s for i, s in zip(items, got, strict=True) if i.label == c)
        assert per == {"train": 6, "val": 2, "test": 2}
    assert make_split(items, SplitOptions(seed=4)) != got
    # a class's split does not depend on the other classes
    only_a = [i for i in items if i.label == "A"]
    assert make_split(only_a, opts) == got[:10]


def test_too_few_images_exits_2_naming_the_class() -> None:
    items = [SplitItem("A", f"A/{k}.png") for k in range(5)] + [SplitItem("B", "B/0.png")] * 2
    with pytest.raises(UsageError, match=r"--split-fractions.*class 'B' has 2 image"):
        make_split(items, SplitOptions())
    # without val two images per class are enough
    assert "val" not in make_split(items, SplitOptions((0.8, 0.0, 0.2)))


def test_groups_never_straddle_splits_over_many_seeds() -> None:
    """Property: for random grouped data sets and 300 seeds, every group lies in one split,
    every class reaches every split, and the sizes follow the fractions roughly."""
    rng = random.Random(0)
    for seed in range(300):
        people = [f"p{k}" for k in range(rng.randint(4, 9))]
        items = []
        for c in "ABCDE"[: rng.randint(2, 5)]:
            for p in rng.sample(people, rng.randint(3, len(people))):
                items += [SplitItem(c, f"{c}/{p}/{m}.png", p) for m in range(rng.randint(1, 4))]
        items += [SplitItem("A", f"A/loose{m}.png") for m in range(rng.randint(0, 3))]
        try:
            got = make_split(items, SplitOptions(seed=seed))
        except UsageError as e:  # a class whose groups other classes took: said, never leaked
            assert "group" in str(e)
            continue
        where: dict[str, set[str]] = {}
        for item, split in zip(items, got, strict=True):
            if item.group is not None:
                where.setdefault(item.group, set()).add(split)
        assert all(len(s) == 1 for s in where.values()), seed
        for c in {i.label for i in items}:
            assert {s for i, s in zip(items, got, strict=True) if i.label == c} == {
                "train",
                "val",
                "test",
            }


def test_too_few_groups_exits_2_naming_class_and_count() -> None:
    items = [SplitItem("A", f"A/{g}/{k}.png", g) for g in ("x", "y") for k in range(5)]
    with pytest.raises(UsageError, match=r"class 'A' has 2 group\(s\)"):
        make_split(items, SplitOptions())
    ok = make_split(items, SplitOptions((0.5, 0.0, 0.5)))
    assert sorted(set(ok)) == ["test", "train"]


# --- the class-folder tree -----------------------------------------------------------------


def test_tree_groups_are_subfolders_shared_across_classes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", {"cat": 2, "dog": 3}, groups=("alice", "bob", "carl", "dan"))
    data = open_labelled(root)
    assert data.form == "tree" and data.how == "seeded" and data.grouped
    assert data.class_names == ["cat", "dog"] and available_splits(data) == [
        "train",
        "val",
        "test",
    ]
    person = {}
    for e in data.entries():
        assert person.setdefault(e.group, e.split) == e.split  # alice: one split, all classes
    assert len(person) == 4
    test = list_split(data, "test")
    assert set(test.present_classes) == {"cat", "dog"}
    # --group-by on file names replaces the sub-folders: here one group per letter of name
    by_name = open_labelled(root, SplitOptions(group_by=r"^(\w)"))
    assert {e.group for e in by_name.entries()} == {"a", "b", "c", "d"}


def test_tree_bad_input(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", {"A": 3, "B": 3})
    (root / "C" / "sub").mkdir(parents=True)
    with pytest.raises(TempoError, match=r"class folder .*C holds no images"):
        open_labelled(root)
    (root / "C" / "sub").rmdir()
    (root / "C").rmdir()
    with pytest.raises(UsageError, match=r"--group-by.*2 file name\(s\) have no group"):
        open_labelled(root, SplitOptions(group_by=r"^([12])"))
    # a root that mixes split folders and class folders
    _image(root / "train" / "A" / "x.png")
    with pytest.raises(UsageError, match=r"mixes split folders \(train\) and class folders \(A\)"):
        open_labelled(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TempoError, match="no class folders"):
        open_labelled(tmp_path / "empty")


def test_split_layout_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "s"
    for split in ("train", "train-1", "test"):
        for c in "AC":
            _image(root / split / c / "0.png")
    _image(root / "frames" / "0000.png")  # frames beside the splits (the ASL layout)
    data = open_labelled(root)
    assert data.form == "splits" and data.how == "given"
    assert available_splits(root) == ["train", "train-1", "test"] and class_names(root)[0] == "A"


# --- manifests -----------------------------------------------------------------------------


def test_manifest_given_split_and_round_trip(tmp_path: Path) -> None:
    for c in "AB":
        for k in range(3):
            _image(tmp_path / "img" / f"{c}{k}.png")
    rows = [
        (f"img/{c}{k}.png", c, ["train", "val", "test"][k], None) for c in "AB" for k in range(3)
    ]
    m = write_manifest(tmp_path / "m.csv", rows)
    data = open_labelled(m)
    assert data.form == "manifest" and data.how == "manifest"
    assert list_split(data, "val").paths == [
        (tmp_path / "img" / "A1.png").resolve(),
        (tmp_path / "img" / "B1.png").resolve(),
    ]
    assert data.manifest_rows(tmp_path) == rows


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("path,label\nimg/A0.png,A\nimg/nope.png,A\n", 3, "file not found: img/nope.png"),
        ("path,label,split\nimg/A0.png,A,train\nimg/A1.png,A,holdout\n", 3, "unknown split"),
        ("path,label\nimg/A0.png,A\nimg/A1.png,A,extra\n", 3, "3 fields, the header has 2"),
        ("path,label\nimg/A0.png,A\nimg/A0.png,A\n", 3, "img/A0.png is listed twice"),
        ("path,label,split\nimg/A0.png,A,train\nimg/A1.png,A,\n", 3, "no split"),
        ("file,label\nimg/A0.png,A\n", 1, "header"),
        ("path,label\n,A\n", 2, "empty path or label"),
    ],
)
def test_manifest_bad_rows_exit_2_naming_the_line(
    tmp_path: Path, body: str, line: int, what: str
) -> None:
    for k in range(2):
        _image(tmp_path / "img" / f"A{k}.png")
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(UsageError, match=rf"--data.*m\.csv.*line {line}: {what}"):
        read_manifest(tmp_path / "m.csv")


def test_given_splits_are_checked_for_groups_in_two_splits(cli, tmp_path: Path) -> None:
    rows = []
    for k, (split, person) in enumerate([("train", "ann"), ("test", "ann"), ("test", "bob")]):
        _image(tmp_path / "img" / f"{person}_{k}.png", 40 * k)
        rows.append((f"img/{person}_{k}.png", "A", split, person))
    m = write_manifest(tmp_path / "m.csv", rows)
    assert open_labelled(m).straddling() == {"ann": ["train", "test"]}
    assert open_labelled(m).describe()["groups_in_two_splits"] == 1
    r = cli("data", "check", m, "--quiet")
    assert (
        r.code == 0
        and "1 group(s) have images in two splits, e.g. 'ann' in train and test" in r.err
    )
    # split folders: --group-by names the groups to check
    root = tmp_path / "s"
    for split, name in (("train", "cam1_0.png"), ("test", "cam1_1.png"), ("test", "cam2_0.png")):
        _image(root / split / "A" / name, len(name))
    assert open_labelled(root).straddling() == {}
    grouped = open_labelled(root, SplitOptions(group_by=r"^(cam\d)_"))
    assert grouped.how == "given" and grouped.straddling() == {"cam1": ["train", "test"]}
