"""Backbones, projection head, classifier; ImageNet weights offline (no network used)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.models.backbones import (
    FEATURE_DIM,
    arch_from_state,
    build_resnet,
    imagenet_weight_path,
)
from tempo_cli.models.classifier import Classifier
from tempo_cli.models.projection_head import ProjectionHead, head_for


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TEMPO_OFFLINE", "1")
    return tmp_path / "torch"


def test_resnet18_features_and_classifier() -> None:
    m = build_resnet("resnet18", "random")
    assert isinstance(m.fc, torch.nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, FEATURE_DIM["resnet18"])
    clf = Classifier(m, torch.nn.Linear(512, 24))
    assert clf(x).shape == (2, 24)


def test_unknown_arch_and_init() -> None:
    with pytest.raises(UsageError, match="--backbone"):
        build_resnet("vgg16")
    with pytest.raises(UsageError, match="--init"):
        build_resnet("resnet18", "nope")


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_arch_from_state(arch: str) -> None:
    with torch.device("meta"):
        state = getattr(tvm, arch)().state_dict()
    assert arch_from_state(state) == arch


def test_head_dims() -> None:
    h = head_for("resnet34")
    layers = [type(m).__name__ for m in h]
    assert layers == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert (h[0].in_features, h[0].out_features, h[3].out_features, h[6].out_features) == (
        512,
        1024,
        1024,
        1024,
    )
    assert h[0].bias is None and h[3].bias is None and h[6].bias is not None
    with torch.device("meta"):
        h50 = head_for("resnet50")
    assert (h50[0].in_features, h50[0].out_features, h50[6].out_features) == (2048, 2048, 2048)
    assert head_for("resnet18")(torch.randn(4, 512)).shape == (4, 1024)
    assert isinstance(h, ProjectionHead)


def test_imagenet_offline_message(empty_torch_home: Path) -> None:
    with pytest.raises(TempoError) as e:
        build_resnet("resnet18", "imagenet")
    msg = str(e.value)
    expected = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in msg and "--init random" in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "\n" not in msg


def test_imagenet_download_failure_message(
    empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not offline, but the download fails: same one-line advice."""
    monkeypatch.delenv("TEMPO_OFFLINE")
    import tempo_cli.models.backbones as bb

    def fail(url: str, path: Path, timeout: float = 30.0) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(bb, "_download", fail)
    with pytest.raises(TempoError, match="--init random.*network unreachable"):
        build_resnet("resnet18", "imagenet")


def test_imagenet_from_cache(empty_torch_home: Path) -> None:
    """A weight file in the torch hub dir is used without any network."""
    ref = tvm.resnet18(weights=None)
    path = imagenet_weight_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    m = build_resnet("resnet18", "imagenet")
    assert torch.equal(m.conv1.weight, ref.conv1.weight)
    assert torch.equal(m.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_imagenet_corrupt_cache(empty_torch_home: Path) -> None:
    path = imagenet_weight_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(TempoError, match="resnet18-f37072fd.pth"):
        build_resnet("resnet18", "imagenet")
