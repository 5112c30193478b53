"""Acceptance: Tempo pre-training on the demo beats the same random-init backbone.

ResNet-18 from random init, pre-trained on the demo video's frames for a few CPU minutes
(settings of ../shared/DEMO_NOTES.md), then `tempo eval linear` with 5 labelled images per
class: the mean final accuracy must beat random init by at least 10 points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

MARGIN = 0.10  # never lower this: it is the acceptance criterion


@pytest.mark.slow
def test_tempo_beats_random_init_on_demo(cli, demo_root: Path) -> None:
    r = cli(
        "pretrain", "--data", "demo", "--backbone", "resnet18", "--init", "random",
        "--image-size", "32", "--batch-size", "64", "--optimizer", "adamw", "--lr", "0.001",
        "--l", "0.005", "--proximity", "5", "--epochs", "4", "--device", "cpu",
        "--name", "accept", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    metrics = json.loads((runs / "accept" / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert len(epochs) == 4 and epochs[-1]["loss"] < epochs[0]["loss"]
    model = metrics["checkpoint"]

    r = cli(
        "eval", "linear", "--path", model, "--path", "random", "--backbone", "resnet18",
        "--data", "demo", "--samples-pc", "5", "--image-size", "32", "--device", "cpu",
        "--name", "accept-eval", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    results = json.loads((runs / "accept-eval" / "metrics.json").read_text())["results"]
    acc = {("random" if x["checkpoint"] == "random" else "tempo"): x for x in results}
    tempo, random = acc["tempo"]["accuracy_final_mean"], acc["random"]["accuracy_final_mean"]
    print(f"linear probe, 5 per class: tempo {tempo:.3f} vs random init {random:.3f}")
    assert tempo >= random + MARGIN, (tempo, random)
