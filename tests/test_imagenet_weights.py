"""`--init imagenet` / `--path imagenet` run their real loading code, with no network.

A seeded random ResNet-18 state dict stands in for torchvision's ImageNet file: it is saved
under torchvision's own file name in a temporary `TORCH_HOME`, where tempo looks for it
(`models.backbones.imagenet_weight_path`). `TEMPO_OFFLINE=1` makes any attempt to download
an error instead. The message for a missing file offline is tested in
tests/test_models_backbones.py (test_imagenet_offline_message) and at the CLI below.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from tempo_cli.models.backbones import build_resnet, imagenet_weight_path

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private torch hub dir (offline); the real cache is never touched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TEMPO_OFFLINE", "1")
    # Features of "imagenet" are cached by the weight file's name, not its content: keep
    # this fake file's features out of the session's shared cache.
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "torch"


@pytest.fixture
def fake_imagenet(torch_home: Path) -> dict[str, torch.Tensor]:
    """A seeded random ResNet-18 state dict (with its 1000-class fc) at torchvision's path.

    BatchNorm affine parameters and running statistics are random too (not torchvision's
    1/0 init), so a test can tell they were loaded rather than initialised."""
    g = torch.Generator().manual_seed(2024)
    state = tvm.resnet18(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith("running_var") or (key.startswith(("bn", "layer")) and "bn" in key
                                           and key.endswith("weight")):  # fmt: skip
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=g) * 0.05
    path = imagenet_weight_path("resnet18")
    assert path.name == os.path.basename(tvm.ResNet18_Weights.IMAGENET1K_V1.url)
    assert path.parent == torch_home / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def _assert_backbone_is(state: dict[str, torch.Tensor], backbone: dict[str, torch.Tensor]) -> None:
    """`backbone` (no fc) holds exactly the tensors of `state` (with fc)."""
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert set(backbone) == set(expected)
    for key, value in expected.items():
        assert torch.equal(backbone[key].cpu(), value), key


def test_build_resnet_reads_the_file(fake_imagenet: dict[str, torch.Tensor]) -> None:
    from tempo_cli.models.checkpoint import load_model

    model = build_resnet("resnet18", "imagenet")
    assert isinstance(model.fc, torch.nn.Identity)
    _assert_backbone_is(fake_imagenet, model.state_dict())
    loaded = load_model("imagenet", "resnet18")
    assert loaded.source_format == "imagenet"
    _assert_backbone_is(fake_imagenet, loaded.backbone.state_dict())


def test_pretrain_init_imagenet(
    cli, demo_root: Path, fake_imagenet: dict[str, torch.Tensor]
) -> None:
    from tempo_cli.models.checkpoint import load_model

    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    args = ("pretrain", "--data", "demo", "--init", "imagenet", "--batch-size", "16", *TINY)
    r = cli(*args, "--baseline", "--name", "base")
    assert r.code == 0, r.err
    _assert_backbone_is(fake_imagenet, load_model(runs / "base" / "model.pt").backbone.state_dict())

    r = cli(*args, "--max-steps", "2", "--name", "trained")
    assert r.code == 0, r.err
    metrics = json.loads((runs / "trained" / "metrics.json").read_text())
    assert metrics["steps"] == 2
    # Trained from the file's weights: two steps moved them, yet they still point the same
    # way (an independent initialisation would be at cosine ~0).
    trained = load_model(metrics["checkpoint"]).backbone.state_dict()
    start, now = (w["layer3.0.conv1.weight"].flatten() for w in (fake_imagenet, trained))
    assert not torch.equal(start, now)
    assert torch.nn.functional.cosine_similarity(start, now, dim=0) > 0.8


@pytest.mark.slow  # ~11 s on 2 busy cores: features of train-1 and test
def test_eval_linear_path_imagenet(
    cli, demo_root: Path, fake_imagenet: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from tempo_cli.models.checkpoint import load_model

    saved = tmp_path / "clf.pt"
    r = cli("eval", "linear", "--data", "demo", "--path", "imagenet", "--samples-pc", "1",
            "--runs", "1", "--iterations", "20", "--save-model", saved, "--name", "in",
            *TINY)  # fmt: skip
    assert r.code == 0, r.err
    run = Path(os.environ["TEMPO_RUNS_DIR"]) / "in"
    (rec,) = json.loads((run / "metrics.json").read_text())["results"]
    assert rec["checkpoint"] == "imagenet" and rec["samples_pc"] == 1 and rec["runs"] == 1
    assert 0.0 <= rec["accuracy_final_mean"] <= 1.0
    assert json.loads((run / "config.json").read_text())["path"] == ["imagenet"]
    # The frozen backbone the head was trained on is the file's.
    _assert_backbone_is(fake_imagenet, load_model(saved).backbone.state_dict())


def test_missing_file_offline_names_it_at_the_cli(cli, demo_root: Path, torch_home: Path) -> None:
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    r = cli("eval", "linear", "--data", "demo", "--path", "imagenet", "--samples-pc", "1",
            "--runs", "1", "--iterations", "2", *TINY)  # fmt: skip
    assert r.code == 1
    assert str(expected) in r.err and "--init random" in r.err
    assert "Traceback" not in r.err
    assert not expected.exists()  # offline: nothing was downloaded
