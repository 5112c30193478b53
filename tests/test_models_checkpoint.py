"""Checkpoint formats: product round trip, reference, torchvision, detectron2, bad files;
the projection-head search; content ids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models as tvm

from tempo_cli.data import ASL_LETTERS
from tempo_cli.errors import TempoError
from tempo_cli.models.backbones import build_resnet
from tempo_cli.models.checkpoint import (
    FORMAT,
    load_model,
    load_resnet_state,
    save_checkpoint,
)
from tempo_cli.models.content_id import checkpoint_id
from tempo_cli.models.detectron2_format import save_detectron2_pkl
from tempo_cli.models.foreign_formats import HEAD_PREFIXES, find_projection_head
from tempo_cli.models.projection_head import head_for
from tempo_cli.runtime import capture_rng_state, restore_rng_state

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    skip = "num_batches_tracked"
    ka = {k for k in a if not k.endswith(skip)}
    kb = {k for k in b if not k.endswith(skip)}
    assert ka == kb
    for k in ka:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def trained() -> tvm.ResNet:
    """A resnet18 whose BN statistics are not the defaults (so they are checked too)."""
    torch.manual_seed(0)
    m = build_resnet("resnet18")
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, 32, 32))
    return m.eval()


def test_product_round_trip(tmp_path: Path, trained: tvm.ResNet) -> None:
    head = head_for("resnet18")
    lin = nn.Linear(512, 3)
    opt = torch.optim.SGD(list(trained.parameters()) + list(head.parameters()), lr=0.1)
    p = save_checkpoint(
        tmp_path / "m.pt",
        arch="resnet18",
        backbone=trained,
        head=head,
        linear=lin,
        class_names=["x", "y", "z"],
        meta={"settings": {"lr": 0.1, "data": Path("/d")}, "epoch": 3, "step": 30},
        training_state={"optimizer": opt.state_dict(), "rng": capture_rng_state()},
    )
    m = load_model(p)
    assert (m.arch, m.source_format, m.feature_dim, m.name) == ("resnet18", "product", 512, "m")
    assert_same_state(m.backbone.state_dict(), trained.state_dict())
    assert_same_state(m.head.state_dict(), head.state_dict())
    assert_same_state(m.linear.state_dict(), lin.state_dict())
    assert m.class_names == ["x", "y", "z"]
    assert m.meta == {"settings": {"lr": 0.1, "data": "/d"}, "epoch": 3, "step": 30}
    opt.load_state_dict(m.training_state["optimizer"])
    # RNG state round trip: same draws after restoring.
    restore_rng_state(m.training_state["rng"])
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    restore_rng_state(m.training_state["rng"])
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    m.backbone.eval()
    torch.testing.assert_close(m.classifier()(X), lin(trained(X)))


def test_product_backbone_only_and_ddp_prefix(tmp_path: Path, trained: tvm.ResNet) -> None:
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    p = save_checkpoint(tmp_path / "b.pt", arch="resnet18", backbone=state)
    m = load_model(p)
    assert m.head is None and m.linear is None and m.class_names is None
    assert_same_state(m.backbone.state_dict(), trained.state_dict())
    with pytest.raises(TempoError, match="no linear"):
        m.classifier()


class Reference(nn.Module):
    """The reference's saved module: backbone = children()[:-1], linear = Linear(512, 24)."""

    def __init__(self, resnet: tvm.ResNet, head: nn.Module | None = None, name: str = "") -> None:
        super().__init__()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        if head is not None:
            setattr(self, name, head)
        self.linear = nn.Linear(512, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.backbone(x), 1))


@pytest.mark.parametrize("head_name", [None, "projection_head", "projector"])
def test_reference_format(tmp_path: Path, head_name: str | None) -> None:
    torch.manual_seed(1)
    resnet = tvm.resnet18(weights=None)
    head = None
    if head_name == "projection_head":  # lightly's BarlowTwinsProjectionHead: `layers.N`
        head = nn.Module()
        head.layers = head_for("resnet18")
    elif head_name:
        head = head_for("resnet18")
    ref = Reference(resnet, head, head_name or "").eval()
    p = tmp_path / "tempo.pth"
    torch.save(ref.state_dict(), p)
    m = load_model(p)
    assert (m.arch, m.source_format) == ("resnet18", "reference")
    assert m.class_names == list(ASL_LETTERS)
    assert (m.head is not None) == (head_name is not None)
    m.backbone.eval()
    torch.testing.assert_close(m.classifier()(X), ref(X))
    expected = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    assert_same_state(load_resnet_state(p)[1], expected)


@pytest.mark.parametrize("prefix", HEAD_PREFIXES)
@pytest.mark.parametrize("level", ["", "layers."])
def test_find_projection_head(prefix: str, level: str) -> None:
    """One search finds a head right under each prefix and under lightly's `layers.`."""
    head = head_for("resnet18").state_dict()
    state = {"backbone.conv1.weight": torch.zeros(1), "linear.weight": torch.zeros(1)}
    state.update({f"{prefix}{level}{k}": v for k, v in head.items()})
    found = find_projection_head(state)
    assert found is not None and found.keys() == head.keys()
    assert all(found[k] is head[k] for k in head)
    del state[f"{prefix}{level}6.bias"]  # not a whole head: not taken
    assert find_projection_head(state) is None
    assert find_projection_head({f"other.{k}": v for k, v in head.items()}) is None


@pytest.mark.parametrize("layout", ["sequential", "torchvision"])
@pytest.mark.parametrize("level", ["", "layers."])
def test_head_read_with_either_backbone_layout(tmp_path: Path, layout: str, level: str) -> None:
    """Reference files (nn.Sequential or torchvision backbone) give the same head either way."""
    torch.manual_seed(3)
    resnet = tvm.resnet18(weights=None)
    head = head_for("resnet18").eval()
    if layout == "sequential":
        state = Reference(resnet).state_dict()
    else:
        state = {f"backbone.{k}": v for k, v in resnet.state_dict().items() if "fc." not in k}
    state.update({f"projector.{level}{k}": v for k, v in head.state_dict().items()})
    torch.save(state, tmp_path / "h.pth")
    m = load_model(tmp_path / "h.pth")
    assert m.source_format == "reference" and m.head is not None
    assert_same_state(m.head.state_dict(), head.state_dict())
    feats = torch.randn(4, 512)
    torch.testing.assert_close(m.head.eval()(feats), head(feats))


def test_image_size_recorded(tmp_path: Path, trained: tvm.ResNet) -> None:
    """Product files record the input side; files that do not record it load with None."""
    p = save_checkpoint(tmp_path / "s.pt", arch="resnet18", backbone=trained, image_size=32)
    assert torch.load(p, weights_only=True)["image_size"] == 32
    assert load_model(p).image_size == 32
    p = save_checkpoint(tmp_path / "n.pt", arch="resnet18", backbone=trained)
    assert load_model(p).image_size is None
    # A product file written before the key existed (today's layout without it).
    old = {
        "format": FORMAT,
        "version": 1,
        "arch": "resnet18",
        "backbone": {k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")},
        "head": None,
        "linear": None,
        "class_names": None,
        "meta": {},
        "training_state": None,
    }
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").image_size is None
    torch.save(Reference(trained).state_dict(), tmp_path / "ref.pth")
    torch.save(trained.state_dict(), tmp_path / "tv.pth")
    d2 = save_detectron2_pkl(tmp_path / "d2.pkl", trained.state_dict())
    for spec in (tmp_path / "ref.pth", tmp_path / "tv.pth", d2, "random"):
        assert load_model(spec, "resnet18").image_size is None, spec


def test_torchvision_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(2)
    resnet = tvm.resnet18(weights=None)
    p = tmp_path / "tv.pth"
    torch.save(resnet.state_dict(), p)  # fc of 1000 classes: the ImageNet head, ignored
    m = load_model(p)
    assert (m.source_format, m.linear) == ("torchvision", None)
    small = tvm.resnet18(weights=None, num_classes=10)
    torch.save(small.state_dict(), p)  # fc of 10 classes: a linear head
    m = load_model(p)
    assert m.linear is not None and m.linear.out_features == 10 and m.class_names is None
    torch.testing.assert_close(m.classifier().eval()(X), small.eval()(X))
    no_fc = {k: v for k, v in small.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": no_fc}, p)  # wrapped, without fc
    m = load_model(p)
    assert m.linear is None
    assert_same_state(m.backbone.state_dict(), no_fc)


def test_detectron2_pkl(tmp_path: Path, trained: tvm.ResNet) -> None:
    p = save_detectron2_pkl(tmp_path / "tempo50.pkl", trained.state_dict())
    m = load_model(p)
    assert (m.arch, m.source_format) == ("resnet18", "detectron2")
    assert_same_state(m.backbone.state_dict(), trained.state_dict())


def test_name_in_model_dir(trained: tvm.ResNet) -> None:
    model_dir = Path(os.environ["TEMPO_MODEL_DIR"])
    save_checkpoint(model_dir / "zoo-r18.pt", arch="resnet18", backbone=trained)
    assert load_model("zoo-r18.pt").path == model_dir / "zoo-r18.pt"


def test_baselines() -> None:
    m = load_model("random", "resnet18")
    assert (m.arch, m.source_format, m.name, m.feature_dim) == ("resnet18", "random", "random", 512)
    assert load_model("random").arch == "resnet34"


def test_missing_truncated_foreign(tmp_path: Path, trained: tvm.ResNet) -> None:
    with pytest.raises(TempoError, match="nothere.pt.*not found"):
        load_model(tmp_path / "nothere.pt")
    good = save_checkpoint(tmp_path / "good.pt", arch="resnet18", backbone=trained)
    data = good.read_bytes()
    cases = {
        "trunc.pt": data[: len(data) // 2],
        "empty.pt": b"",
        "text.pt": b"hello, not a checkpoint\n",
        "trunc.pkl": save_detectron2_pkl(tmp_path / "x.pkl", trained.state_dict()).read_bytes()[
            :1000
        ],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TempoError, match=name):
            load_model(tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.x": torch.zeros(1)}, tmp_path / "bad.pt")
    for name in ("list.pt", "linear.pt", "bad.pt"):
        with pytest.raises(TempoError, match=name):
            load_model(tmp_path / name)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_torch_file_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"conv1.weight": Evil(marker)}, p)
    with pytest.raises(TempoError, match="evil.pt"):
        load_model(p)
    assert not marker.exists()


def test_checkpoint_id(tmp_path: Path, trained: tvm.ResNet) -> None:
    a = save_checkpoint(tmp_path / "a.pt", arch="resnet18", backbone=trained)
    id1 = checkpoint_id(a)
    assert id1 == checkpoint_id(str(a)) and len(id1) == 16
    save_checkpoint(a, arch="resnet18", backbone=trained, meta={"epoch": 2})
    assert checkpoint_id(a) != id1
    assert checkpoint_id("imagenet", "resnet18") == "imagenet-resnet18-resnet18-f37072fd"
    torch.manual_seed(5)
    assert checkpoint_id("random", "resnet18") == "random-resnet18-seed5"


def test_foreign_safetensors(tmp_path: Path, trained: tvm.ResNet) -> None:
    """safetensors tempo did not write: a timm/torchvision state dict with its ImageNet fc
    (ignored), DDP prefixes, half precision, bytes under another suffix; no metadata."""
    from safetensors.torch import save_file

    full = tvm.resnet18(weights=None)
    full.load_state_dict({**full.state_dict(), **trained.state_dict()}, strict=False)
    state = {
        f"module.{k}": v.half() if v.is_floating_point() else v
        for k, v in full.state_dict().items()
    }
    p = tmp_path / "timm.safetensors"
    save_file(state, p)
    m = load_model(p)
    assert (m.source_format, m.arch, m.linear, m.image_size) == (
        "safetensors",
        "resnet18",
        None,
        None,
    )
    assert next(m.backbone.parameters()).dtype == torch.float32
    torch.testing.assert_close(m.backbone.eval()(X), trained(X), atol=2e-2, rtol=2e-2)
    other = tmp_path / "weights.bin"  # safetensors bytes, another name: read as safetensors
    other.write_bytes(p.read_bytes())
    assert load_model(other).source_format == "safetensors"
    assert checkpoint_id(other) == checkpoint_id(p)
