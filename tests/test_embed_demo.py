"""`tempo embed` on the demo: features that separate the classes score higher than random
init on every number (resnet18 at 32 px; the trained model is a few supervised steps)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")


def _supervised(root: Path, path: Path, steps: int = 30) -> Path:
    """A resnet18 trained with the demo's labels for `steps` SGD steps (batches of 64)."""
    from tempo_cli.data.labelled import load_split
    from tempo_cli.data.transforms import normalize_uint8
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    train = load_split(root, "train", 32)
    torch.manual_seed(0)
    backbone, head = build_resnet("resnet18"), nn.Linear(512, train.num_classes)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(train), generator=g)[:64]
        logits = head(backbone(normalize_uint8(train.images[idx])))
        loss = nn.functional.cross_entropy(logits, train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_checkpoint(path, arch="resnet18", backbone=backbone.eval(), image_size=32)


@pytest.mark.slow
def test_trained_features_separate_demo_classes_better_than_random(
    cli, demo_root: Path, tmp_path: Path
) -> None:
    trained = _supervised(demo_root, tmp_path / "supervised.pt")
    res = cli("embed", "--path", trained, "--path", "random", "--data", demo_root, *TINY,
              "--name", "demo-embed")  # fmt: skip
    assert res.code == 0, res.err
    metrics = json.loads(
        (Path(os.environ["TEMPO_RUNS_DIR"]) / "demo-embed/metrics.json").read_text()
    )
    by = {r["checkpoint"]: r for r in metrics["embeddings"]}
    assert metrics["images"] == 480 and metrics["neighbours_from"] == "train"
    assert by["supervised"]["silhouette_cosine"] > by["random"]["silhouette_cosine"] + 0.05
    assert by["supervised"]["class_agreement"] > by["random"]["class_agreement"] + 0.1
