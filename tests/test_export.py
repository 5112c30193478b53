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

    def __reduce__(self):
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


# --- the reference's classifier layout ------------------------------------------------------


class TempoLinear(nn.Module):
    """The reference's classifier as SPEC.md describes it (its `TempoLinear`, any depth)."""

    def __init__(self, resnet: nn.Module, features: int, classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.linear = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.backbone(x), start_dim=1))


@pytest.mark.parametrize(
    ("arch", "features", "classes"), [("resnet18", 512, 24), ("resnet50", 2048, 5)]
)
def test_export_reference_loads_strictly_with_same_logits(
    cli, ckpt, tmp_path: Path, arch: str, features: int, classes: int
) -> None:
    if arch == "resnet18":
        path = ckpt[0]
    else:
        torch.manual_seed(1)
        path = tmp_path / "r50.pt"
        backbone = build_resnet(arch)
        backbone.train()
        with torch.no_grad():
            backbone(torch.randn(2, 3, 32, 32))
        save_checkpoint(path, arch=arch, backbone=backbone, linear=nn.Linear(features, classes))
    out = tmp_path / "reference.pth"
    r = cli("export", "--path", path, "--format", "reference", "--out", out, "--name", "ref")
    assert r.code == 0, r.err
    state = torch.load(out, weights_only=True)
    assert {"backbone.0.weight", "backbone.1.running_var", "backbone.4.0.conv1.weight",
            "backbone.7.1.bn2.bias", "linear.weight", "linear.bias"} <= set(state)  # fmt: skip
    assert not any(k.startswith(("conv1", "bn1", "layer", "fc")) for k in state)
    reference = TempoLinear(getattr(tvm, arch)(weights=None), features, classes)
    reference.load_state_dict(state, strict=True)
    tempo = load_model(path).classifier()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = tempo.eval()(x)
        got = reference.eval()(x)
    assert got.shape == (3, classes)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    back = load_model(out)  # tempo reads its own export back as a reference checkpoint
    assert back.source_format == "reference" and back.arch == arch
    assert torch.equal(back.linear.weight, state["linear.weight"])
    metrics = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "ref" / "metrics.json").read_text())
    assert metrics["format"] == "reference" and metrics["classes"] == classes


@pytest.mark.parametrize("source", ["headless", "random"])
def test_export_reference_without_linear_head_exits_1(cli, tmp_path: Path, source: str) -> None:
    path: Path | str = "random"
    if source == "headless":
        path = tmp_path / "headless.pt"
        save_checkpoint(path, arch="resnet18", backbone=build_resnet("resnet18"))
    out = tmp_path / "ref.pth"
    r = cli("export", "--path", path, "--format", "reference", "--out", out,
            "--backbone", "resnet18")  # fmt: skip
    assert r.code == 1
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    assert "tempo eval linear" in lines[0] and "--save-model" in lines[0]
    assert str(path) in lines[0]
    assert not out.exists() and list(tmp_path.glob(".ref.pth*")) == []


def test_export_formats_registry_matches_settings() -> None:
    from typing import get_args

    from tempo_cli.models.export import FORMATS
    from tempo_cli.settings.export import ExportSettings

    allowed = get_args(ExportSettings.model_fields["format"].annotation)
    assert set(allowed) == set(FORMATS)
