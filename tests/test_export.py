"""`tempo export`: torchvision and detectron2 files that load back identically."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from tempo_cli.models.backbones import build_resnet
from tempo_cli.models.checkpoint import load_model, save_checkpoint
from tempo_cli.models.detectron2_format import load_detectron2_pkl


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, nn.Linear]:
    torch.manual_seed(0)
    backbone = build_resnet("resnet18")
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(4, 3, 32, 32))  # non-default BN statistics
    linear = nn.Linear(512, 24)
    p = tmp_path_factory.mktemp("ckpt") / "tempo18.pt"
    save_checkpoint(p, arch="resnet18", backbone=backbone, linear=linear)
    return p, backbone, linear


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    keys = {k for k in a if "num_batches_tracked" not in k}
    assert keys == {k for k in b if "num_batches_tracked" not in k}
    for k in keys:
        assert torch.equal(a[k], b[k]), k


def test_export_torchvision(cli, ckpt, tmp_path: Path) -> None:
    path, backbone, linear = ckpt
    out = tmp_path / "r18.pth"
    r = cli("export", "--path", path, "--format", "torchvision", "--out", out, "--name", "ex")
    assert r.code == 0, r.err
    state = torch.load(out, weights_only=True)
    # A plain torchvision model takes it as is (the linear head is its fc).
    tv = tvm.resnet18(weights=None, num_classes=24)
    tv.load_state_dict(state)
    assert torch.equal(tv.fc.weight, linear.weight)
    _same({k: v for k, v in state.items() if not k.startswith("fc.")}, backbone.state_dict())
    assert torch.equal(state["bn1.num_batches_tracked"], backbone.bn1.num_batches_tracked)
    back = load_model(out)
    assert back.source_format == "torchvision" and back.class_names is not None
    _same(back.backbone.state_dict(), backbone.state_dict())
    metrics = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "ex" / "metrics.json").read_text())
    assert metrics["out"] == str(out) and metrics["arch"] == "resnet18"
    assert (Path(os.environ["TEMPO_RUNS_DIR"]) / "ex" / "config.json").is_file()


def test_export_detectron2(cli, ckpt, tmp_path: Path) -> None:
    path, backbone, _ = ckpt
    out = tmp_path / "r18.pkl"
    r = cli("export", "--path", path, "--format", "detectron2", "--out", out, "--quiet")
    assert r.code == 0, r.err
    with open(out, "rb") as f:
        obj = pickle.load(f)  # what detectron2's checkpointer does
    assert obj["__author__"] == "torchvision" and obj["matching_heuristics"] is True
    keys = set(obj["model"])
    for k in (
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "stem.conv1.norm.running_var",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.bias",
        "res3.0.shortcut.weight",
        "res3.0.shortcut.norm.running_mean",
        "res5.1.conv2.norm.weight",
    ):
        assert k in keys, k
    assert not any(k.startswith(("layer", "fc", "stem.fc", "stem.bn")) for k in keys)
    back = load_model(out)
    assert back.source_format == "detectron2"
    _same(back.backbone.state_dict(), backbone.state_dict())
    # detectron2 -> torchvision -> detectron2 gives the same file content.
    out2 = tmp_path / "again.pkl"
    assert cli("export", "--path", out, "--format", "detectron2", "--out", out2).code == 0
    again = load_detectron2_pkl(out2)["model"]
    assert set(again) == keys
    assert all((again[k] == obj["model"][k]).all() for k in keys)


def test_export_random_resnet50_shortcut_names(cli, tmp_path: Path) -> None:
    out = tmp_path / "r50.pkl"
    r = cli("export", "--path", "random", "--backbone", "resnet50", "--format", "detectron2",
            "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    keys = set(load_detectron2_pkl(out)["model"])
    assert {"res2.0.shortcut.weight", "res2.0.shortcut.norm.bias", "res2.0.conv3.weight"} <= keys
    assert load_model(out).arch == "resnet50"


def test_export_truncated_checkpoint(cli, ckpt, tmp_path: Path) -> None:
    bad = tmp_path / "half.pt"
    data = ckpt[0].read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    out = tmp_path / "x.pth"
    r = cli("export", "--path", bad, "--format", "torchvision", "--out", out)
    assert r.code == 1
    assert str(bad) in r.err and "Traceback" not in r.err
    assert not out.exists()


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_export_hostile_pickle(cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": Evil(marker)}}))
    r = cli("export", "--path", evil, "--format", "torchvision", "--out", tmp_path / "o.pth")
    assert r.code == 1 and "evil.pkl" in r.err and "refused" in r.err
    assert not marker.exists()


def test_export_usage_errors(cli, ckpt, tmp_path: Path) -> None:
    r = cli("export", "--path", ckpt[0], "--format", "onnx", "--out", tmp_path / "o")
    assert r.code == 2 and "--format" in r.err
    r = cli("export", "--path", ckpt[0], "--format", "torchvision")
    assert r.code == 2 and "--out" in r.err
    r = cli("export", "--path", tmp_path / "missing.pt", "--format", "torchvision",
            "--out", tmp_path / "o")  # fmt: skip
    assert r.code == 1 and "missing.pt" in r.err
