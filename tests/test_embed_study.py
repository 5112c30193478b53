"""The study's `embed` stage and its report sections, on a tiny two-arm study (never the
demo preset: too slow for the suite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

STUDY = """\
data = "{frames}"
labelled = "demo"
backbone = "resnet18"
image_size = 32
stages = ["knn", "embed"]
baseline = "random"

[pretrain]
init = "random"
epochs = 2
batch_size = 16
optimizer = "adamw"
monitor = "knn"
monitor_data = "demo"
monitor_budget = 100.0    # every epoch: on 40 frames a kNN pass costs more than training

[knn]
samples_pc = "5"

[embed]
map_points = 120

[arms.tempo]
pretrain = {{ proximity = 5 }}

[arms.random]
source = "random"
"""


@pytest.mark.slow
def test_study_embed_stage_and_report_sections(
    cli, tmp_path: Path, demo_root: Path, write_frames
) -> None:
    """Pre-training on a 40-frame video (2 steps an epoch, 2 epochs: two monitor points),
    kNN and embed on the demo's labelled images."""
    frames = write_frames(tmp_path / "video", 40)
    config = tmp_path / "tiny.toml"
    config.write_text(STUDY.format(frames=frames.as_posix()), encoding="utf-8")
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    study_dir = Path(os.environ["TEMPO_RUNS_DIR"]) / "tiny"
    data = json.loads((study_dir / "study.json").read_text())

    # study.json's numbers are the stages' own
    rows = {row["arm"]: row for row in data["embed"]["rows"]}
    assert set(rows) == {"tempo", "random"}
    for arm, row in rows.items():
        metrics = json.loads((study_dir / arm / "embed" / "metrics.json").read_text())
        record = metrics["embeddings"][0]
        assert row["class_agreement"]["mean"] == record["class_agreement"]
        assert row["silhouette_cosine"]["mean"] == record["silhouette_cosine"]
        assert metrics["map"]["points"] == 120 and metrics["map"]["of"] == 480
        assert (study_dir / row["npz"]).is_file()
    assert data["embed"]["neighbours_from"] == "train" and data["embed"]["k"] == 5
    monitor = data["monitor"]["rows"]
    assert [m["arm"] for m in monitor] == ["tempo"] and monitor[0]["kind"] == "knn"
    assert [e["epoch"] for e in monitor[0]["epochs"]] == [1, 2]
    assert all(e["rankme"] > 0 and 0 <= e["accuracy"] <= 1 for e in monitor[0]["epochs"])

    # both reports have the sections, with the figures drawn once into figures/
    for name in ("embed_map", "embed_neighbours", "monitor"):
        assert (study_dir / "figures" / f"{name}.png").stat().st_size > 0
    html = (study_dir / "report.html").read_text()
    assert "<section id='embed'><h2>What the features learned</h2>" in html
    assert "data-table='embed'" in html and "<section id='monitor'>" in html
    embed_html = html.split("<section id='embed'>")[1].split("</section>")[0]
    assert embed_html.count("data:image/png;base64,") == 2
    md = (study_dir / "report.md").read_text()
    assert "## What the features learned" in md and "class agreement @5" in md
    for name in ("embed_map", "embed_neighbours", "monitor"):
        assert f"(figures/{name}.png)" in md
