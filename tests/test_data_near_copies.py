"""Near-copies across splits: a planted re-encoded copy is found and reported (one line, also
under --quiet); the real photos' own split and the demo have none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tempo_cli.data.labelled_data import open_labelled
from tempo_cli.data.manifest import write_manifest
from tempo_cli.data.near_copies import (
    THRESHOLD,
    check_against_frames,
    check_splits,
    compare,
    thumbnails,
    thumbnails_of,
    warning,
)


def test_thumbnails_of_decoded_images_match_files(tmp_path: Path, asl_sample: Path) -> None:
    paths = sorted((asl_sample / "test" / "A").glob("*.png"))[:3]
    from_files = thumbnails(paths)
    decoded = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB"))) for p in paths]
    ).permute(0, 3, 1, 2)
    from_memory = thumbnails_of(decoded)
    assert from_files.shape == from_memory.shape == (3, 1024)
    assert (from_files * from_memory).sum(1).min() > 0.999  # the same picture either way
    # the same measure, so a photo is its own near-copy and not its neighbour's
    result = compare("test", "frames", ["a", "b", "c"], from_files, ["x"], from_memory[:1])
    assert result.found == 1 and result.examples[0][:2] == ("a", "x")


def test_planted_copy_is_found_and_reported(cli, asl_sample: Path, tmp_path: Path) -> None:
    tree = open_labelled(asl_sample / "test")
    assert all(r.found == 0 for r in check_splits(tree))  # the clean tree: none
    rows = tree.manifest_rows(tmp_path)
    victim = next(e for e in tree.entries() if e.split == "test")
    copy = tmp_path / "copy" / "resized.jpg"
    copy.parent.mkdir()
    im = Image.open(victim.path).convert("RGB")
    im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(copy, quality=85)
    rows.append(("copy/resized.jpg", victim.label, "train", None))
    planted = write_manifest(tmp_path / "planted.csv", rows)
    r = cli("data", "split", planted, "--out", tmp_path / "out.csv", "--quiet", "--name", "p")
    assert r.code == 0, r.err
    lines = [line for line in r.err.splitlines() if "near-copies" in line]
    assert len(lines) == 1, r.err
    assert "1 of 24 test images" in lines[0] and "resized.jpg" in lines[0]
    metrics = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "p" / "metrics.json").read_text())
    by_split = {rec["split"]: rec for rec in metrics["near_copies"]}
    assert by_split["test"]["found"] == 1 and by_split["val"]["found"] == 0
    (name, twin, score) = by_split["test"]["examples"][0]
    assert name.endswith(victim.path.name) and twin == "copy/resized.jpg" and score >= THRESHOLD
    assert warning(check_splits(open_labelled(planted))) == lines[0]


@pytest.mark.slow
def test_demo_has_no_near_copies(demo_root: Path) -> None:
    results = check_splits(open_labelled(demo_root))
    assert [(r.split, r.checked, r.found) for r in results] == [("val", 240, 0), ("test", 480, 0)]


def test_test_images_against_decoded_frames(asl_sample: Path) -> None:
    from tempo_cli.data.frames import load_uint8

    data = open_labelled(asl_sample / "test")
    test = data.files("test")
    others = [e.path for e in data.entries() if e.split == "train"][:30]
    frames = torch.stack([load_uint8(p, 64) for p in others])
    clean = check_against_frames(data, frames, chunk=7)
    assert (clean.checked, clean.found) == (24, 0)
    planted = torch.cat([frames, load_uint8(test.paths[5], 64)[None]])
    hit = check_against_frames(data, planted, chunk=7)
    assert hit.found == 1 and hit.examples[0][1] == "frame 30" and hit.against.startswith("pre")


def test_data_check_finds_a_test_photo_among_video_frames(
    cli, asl_sample: Path, tmp_path: Path, write_frames
) -> None:
    data = open_labelled(asl_sample / "test")
    frames = write_frames(tmp_path / "video", 12, size=64)
    victim = data.files("test").paths[3]
    Image.open(victim).convert("RGB").resize((64, 64)).save(frames / "0005.png")  # a frame
    r = cli("data", "check", asl_sample / "test", "--frames", frames, "--quiet", "--name", "c")
    assert r.code == 0, r.err
    assert r.err.count("\n") == 1 and "near-copies in pre-training frames: 1 of 24 test" in r.err
    m = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "c" / "metrics.json").read_text())
    assert m["frames"]["found"] == 1 and m["frames"]["frames"] == 12
    assert m["frames"]["examples"][0][:2] == [victim.relative_to(data.base).as_posix(), "frame 5"]
    assert m["data"]["form"] == "tree" and [c["found"] for c in m["near_copies"]] == [0, 0]
