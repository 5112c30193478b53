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
