"""A small study on a user's own data: pre-training on a folder of real H.264 video files
(written here with PyAV), labelled photos as a class-folder tree (asl-sample's 120 photos);
its report has the data section: classes, images per split, how the split was made and the
near-copy checks (val/test against train, test against the pre-training frames)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

STUDY = """\
data = "{videos}"
labelled = "{labelled}"
backbone = "resnet18"
image_size = 32
stages = ["linear"]
baseline = "random"
split_seed = 2

[pretrain]
init = "random"
epochs = 1
max_steps = 2
batch_size = 16
optimizer = "adamw"
monitor = "none"

[linear]
samples_pc = "1"
runs = 2
iterations = 10

[arms.tempo]
pretrain = {{ proximity = 2 }}

[arms.random]
source = "random"
"""


def _h264(path: Path, frames: int, seed: int, size: int = 48) -> Path:
    """A short H.264 video of a drifting random texture (what a camera pan looks like)."""
    import av

    rng = np.random.default_rng(seed)
    base = (rng.random((size, 2 * size, 3)) * 255).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            frame = np.ascontiguousarray(base[:, k : k + size])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        out.mux(stream.encode())
    return path


@pytest.mark.slow
def test_study_on_videos_and_a_class_folder_tree(cli, asl_sample: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(2):
        _h264(videos / f"clip{k}.mp4", 24, k)
    config = tmp_path / "own.toml"
    config.write_text(STUDY.format(videos=videos, labelled=asl_sample / "test"))
    r = cli("study", "--config", config, "--quiet")
    assert r.code == 0, r.err
    study_dir = Path(os.environ["TEMPO_RUNS_DIR"]) / "own"
    data = json.loads((study_dir / "study.json").read_text())["data"]
    assert data["form"] == "tree" and data["split"] == "seeded"
    assert data["options"]["seed"] == 2  # the study's split_seed, every stage's split
    assert data["images"]["test"] == {c: 1 for c in data["classes"]} and len(data["classes"]) == 24
    assert [(c["split"], c["found"]) for c in data["near_copies"]] == [("val", 0), ("test", 0)]
    assert data["frames"]["frames"] == 48 and data["frames"]["found"] == 0
    linear = json.loads((study_dir / "tempo/linear/metrics.json").read_text())
    assert linear["data_split"]["images"] == data["images"]  # the stages split alike
    report = (study_dir / "report.md").read_text()
    section = report[report.index("## Data") :]
    assert "split made by tempo (seeded: fractions 0.6,0.2,0.2, seed 2)" in section
    assert "0 of 24 test images have a near-copy in pre-training frames" in section
    assert "| all classes | 72 | 24 | 24 |" in section.replace("  ", " ")
    assert "Data" in (study_dir / "report.html").read_text()


def test_study_split_keys_are_top_level_and_labelled_is_checked_first(
    cli, asl_sample: Path, tmp_path: Path
) -> None:
    base = STUDY.format(videos=tmp_path, labelled=asl_sample / "test")
    config = tmp_path / "bad.toml"
    config.write_text(base.replace("[linear]\n", "[linear]\nsplit_seed = 3\n"))
    r = cli("study", "--config", config)
    assert r.code == 2 and "[linear] split_seed" in r.err
    config.write_text(base.replace("split_seed = 2", 'split_fractions = "0.5,0.5"'))
    r = cli("study", "--config", config)
    assert r.code == 2 and "split_fractions" in r.err
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\n{asl_sample / 'test/A/IMG_0217.png'},A\nnope.png,B\n")
    config.write_text(STUDY.format(videos=tmp_path, labelled=manifest))
    r = cli("study", "--config", config)
    assert r.code == 2 and "line 3: file not found: nope.png" in r.err
    assert not (Path(os.environ["TEMPO_RUNS_DIR"]) / "bad").exists()  # nothing written
