"""`tempo segment --engine detectron2` and weight parity, run through detectron2 itself.

detectron2 is optional and not on the package registry: without it this module is skipped
(the reason says how to install it); CI builds it from ../shared/vendor (.ci/run). Tiny
settings as in test_segment_train: ResNet-18 body, 64 px, 2 training images, CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from tempo_cli.errors import TempoError
from tempo_cli.segment.detectron2_config import INSTALL, require_detectron2

try:
    require_detectron2()
except TempoError:
    pytest.skip(
        f"detectron2 is not installed; install it with {INSTALL} (needs a C++ compiler and "
        "torch first; CI builds it from ../shared/vendor/detectron2-src.tar.gz)",
        allow_module_level=True,
    )

from tempo_cli.segment.detectron2_config import (
    D2Spec,
    build_config,
    build_model,
    load_backbone,
    load_payload,
)
from tempo_cli.settings.segment import SegmentSettings

TINY = (
    "--engine", "detectron2", "--data", "demo", "--image-size", "64", "--batch-size", "2",
    "--lr", "0.005", "--warmup-iters", "0", "--no-augment", "--train-images", "2",
    "--eval-images", "2", "--roi-batch-size", "32", "--proposals", "100", "--vis-images", "2",
    "--device", "cpu", "--quiet",
)  # fmt: skip


def _resnet(arch: str, seed: int) -> torch.nn.Module:
    """A torchvision ResNet with random weights and non-trivial BatchNorm statistics (so
    the parity checks see the running mean/var and affine parameters used)."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain torchvision ResNet-18 state dict file (one of the formats --path reads)."""
    p = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    torch.save(_resnet("resnet18", 0).state_dict(), p)
    return p


@pytest.fixture(scope="module")
def tempo50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference `tempo50` state dict: `backbone.N.*` of nn.Sequential(children()[:-1])."""
    from tempo_cli.models.export import sequential_index

    net = _resnet("resnet50", 1)
    index = sequential_index(net)
    state = {}
    for key, value in net.state_dict().items():
        top, _, rest = key.partition(".")
        if top != "fc":
            state[f"backbone.{index[top]}.{rest}"] = value
    p = tmp_path_factory.mktemp("ckpt") / "tempo50.pth"
    torch.save(state, p)
    return p


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


# --- configuration -----------------------------------------------------------------------


def test_config_from_the_installed_package_without_pkg_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # import -> ImportError
    settings = SegmentSettings(path=["random"], image_size=64)
    cfg = build_config(settings, D2Spec("resnet18", 24, 3, True), torch.device("cpu"))
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.INPUT.FORMAT == "RGB"
    assert not cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.SOLVER.STEPS == ()
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 24 and cfg.MODEL.MASK_ON
    cfg50 = build_config(settings, D2Spec("resnet50", 24, 5, False), torch.device("cpu"))
    assert cfg50.MODEL.RESNETS.DEPTH == 50 and cfg50.MODEL.RESNETS.RES2_OUT_CHANNELS == 256
    assert cfg50.MODEL.BACKBONE.FREEZE_AT == 0 and cfg50.MODEL.RESNETS.NORM == "BN"


# --- weight parity: detectron2's backbone == tempo's torchvision body ------------------


def _features_d2(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """res2..res5 of detectron2's backbone on (B, 3, 64, 64) RGB images in [0, 1], through
    the model's own preprocessing (0-255 RGB, SPEC.md pixel mean/std)."""
    model.eval()
    with torch.no_grad():
        x = model.preprocess_image([{"image": im * 255.0} for im in images])
        feats = model.backbone.bottom_up(x.tensor)
    return [feats[f"res{i}"] for i in (2, 3, 4, 5)]


def _features_tv(arch: str, state: dict[str, torch.Tensor], images: torch.Tensor) -> list:
    """layer1..layer4 of the torchvision engine's Mask R-CNN body from `state`."""
    from tempo_cli.segment.model import ModelSpec, build_maskrcnn

    model = build_maskrcnn(ModelSpec(arch, 24, 64, 3, True), state).eval()
    with torch.no_grad():
        x = torch.stack([model.transform.normalize(im) for im in images])
        return list(model.backbone.body(x).values())


def _d2_model(arch: str) -> torch.nn.Module:
    settings = SegmentSettings(path=["x"], image_size=64)
    return build_model(build_config(settings, D2Spec(arch, 24, 3, True), torch.device("cpu")))


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        rel = float((x - y).abs().max() / y.abs().max())
        assert rel <= 1e-4, rel


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_parity_product_checkpoint(tmp_path: Path, images: torch.Tensor) -> None:
    from tempo_cli.models.checkpoint import save_checkpoint
    from tempo_cli.segment.core import backbone_state

    p = save_checkpoint(tmp_path / "tempo18.pt", arch="resnet18", backbone=_resnet("resnet18", 2))
    arch, state = backbone_state(str(p), "resnet50")
    assert arch == "resnet18"
    model = _d2_model(arch)
    load_backbone(model, state, str(p))
    _assert_same(_features_d2(model, images), _features_tv(arch, state, images))


def test_parity_reference_tempo50(tempo50: Path, images: torch.Tensor) -> None:
    from tempo_cli.segment.core import backbone_state

    arch, state = backbone_state(str(tempo50), "resnet18")
    assert arch == "resnet50"
    model = _d2_model(arch)
    load_backbone(model, state, str(tempo50))
    _assert_same(_features_d2(model, images), _features_tv(arch, state, images))


def test_parity_exported_pkl_through_detection_checkpointer(
    cli: Any, tempo50: Path, tmp_path: Path, images: torch.Tensor
) -> None:
    """The `.pkl` of `tempo export` loaded by detectron2's own DetectionCheckpointer (a
    file this test wrote: trusted) sets every backbone tensor and gives the same features."""
    from detectron2.checkpoint import DetectionCheckpointer

    from tempo_cli.segment.core import backbone_state

    out = tmp_path / "tempo50.pkl"
    assert cli("export", "--path", tempo50, "--format", "detectron2", "--out", out).code == 0
    model = _d2_model("resnet50")
    assert load_payload(model, DetectionCheckpointer(model)._load_file(str(out))) == []
    model = _d2_model("resnet50")
    DetectionCheckpointer(model).load(str(out))
    _, state = backbone_state(str(tempo50), None)
    _assert_same(_features_d2(model, images), _features_tv("resnet50", state, images))


def test_wrong_depth_is_one_line(tempo50: Path) -> None:
    from tempo_cli.segment.core import backbone_state

    _, state = backbone_state(str(tempo50), None)
    with pytest.raises(TempoError, match="tempo50.pth: no matching value .* backbone"):
        load_backbone(_d2_model("resnet18"), state, str(tempo50))


# --- training end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_train_evaluate_and_resume(cli: Any, demo_root: Path, r18: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    r = cli("segment", "--path", r18, "--norm", "batch", "--max-iter", "3", "--eval-period", "2",
            "--name", "a", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    run = runs / "a"
    m = _metrics(run)
    assert m["engine"] == "detectron2"
    assert [e["iteration"] for e in m["evals"]] == [2, 3]
    assert m["evals"][1]["loss"] < m["evals"][0]["loss"]  # losses fall on the fixed batch
    for e in [*m["evals"], m["final"]]:
        for key in ("bbox_AP", "segm_AP"):
            assert isinstance(e[key], float) and 0.0 <= e[key] <= 1.0
    assert m["final"]["score_thresh"] == 0.7 and m["final"]["iteration"] == 3
    assert "iterations_to_90pct_final_segm_AP" in m
    for name in ("config.json", "ap.png", "predictions.png", "last.pt", "detectron2.log"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "tempo-segment" and ckpt["position"]["iteration"] == 3
    assert ckpt["payload"]["engine"] == "detectron2"
    assert any(k.startswith("backbone.bottom_up.res2.") for k in ckpt["model"])

    # The torchvision engine refuses it (exit 2); without --engine the run's engine is used.
    r = cli("segment", "--resume", run / "last.pt", "--engine", "torchvision", "--quiet")
    assert r.code == 2 and "detectron2" in r.err
    first_loss = m["evals"][0]["loss"]
    r = cli("segment", "--resume", run / "last.pt", "--max-iter", "4", "--device", "cpu",
            "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    m = _metrics(run)
    assert [e["iteration"] for e in m["evals"]] == [2, 3, 4]
    assert m["evals"][2]["loss"] < first_loss  # the trained weights were loaded
    assert torch.load(run / "last.pt", weights_only=True)["position"]["iteration"] == 4


@pytest.mark.slow
def test_comparison_resnet50_reference_and_random(
    cli: Any, demo_root: Path, tempo50: Path, tmp_path: Path
) -> None:
    r = cli("segment", "--path", "random", "--path", tempo50, "--backbone", "resnet50",
            "--max-iter", "1", "--eval-period", "1", "--name", "cmp", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    run = tmp_path / "runs" / "cmp"
    m = _metrics(run)
    assert [x["label"] for x in m["runs"]] == ["random", "tempo50"]
    for x in m["runs"]:
        assert [e["iteration"] for e in x["evals"]] == [1]
        assert (Path(x["run_dir"]) / "ap.png").is_file()
    assert (run / "segm_ap_comparison.png").is_file()


def _segment(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tempo_cli", "segment", *(str(a) for a in args)]


@pytest.mark.slow
def test_ctrl_c_exits_130_and_resumes_exactly(demo_root: Path, r18: Path, tmp_path: Path) -> None:
    """SIGINT after the evaluation at 2: the step in flight finishes, last.pt is written,
    exit 130; `--resume` ends with the evaluations and weights of an uninterrupted run."""
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    common = ("--path", r18, "--norm", "batch", "--max-iter", "4", "--eval-period", "2", *TINY)
    subprocess.run(_segment(*common, "--name", "straight"), env=env, cwd=tmp_path, check=True)

    proc = subprocess.Popen(
        _segment(*common, "--name", "cut"), env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    last = runs / "cut" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.exists(), "the run never reached its first evaluation"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "SIGINT" in err and f"--resume {last}" in err
    state = torch.load(last, weights_only=True)
    assert state["position"]["iteration"] in (2, 3)  # stopped between steps
    assert [e["iteration"] for e in state["payload"]["evals"]] == [2]

    r = subprocess.run(
        _segment("--resume", last, "--device", "cpu", "--quiet"),
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    straight, resumed = _metrics(runs / "straight"), _metrics(runs / "cut")

    def same(evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "train_seconds"} for e in evals]

    assert same(resumed["evals"]) == same(straight["evals"])
    assert resumed["final"] == straight["final"]
    a = torch.load(runs / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
