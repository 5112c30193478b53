"""`tempo segment` end to end on demo_mask at a tiny size (torchvision engine, CPU).

Tiny settings keep Mask R-CNN affordable on a CPU: ResNet-18 body, 64 px, 2 training
images (one fixed batch, no flips: the loss must fall), 32 sampled regions and 100
proposals per image, evaluation on 2 test images.
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

TINY = (
    "--data", "demo", "--image-size", "64", "--batch-size", "2", "--lr", "0.005",
    "--warmup-iters", "0", "--no-augment", "--train-images", "2", "--eval-images", "2",
    "--roi-batch-size", "32", "--proposals", "100", "--vis-images", "2", "--device", "cpu",
    "--quiet",
)  # fmt: skip


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain torchvision ResNet-18 state dict file (one of the formats --path reads)."""
    import torchvision

    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), p)
    return p


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_train_evaluate_and_resume(cli: Any, demo_root: Path, r18: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # A random-statistics body: trainable BatchNorm (as for --path random).
    r = cli("segment", "--path", r18, "--norm", "batch", "--max-iter", "4", "--eval-period", "2",
            "--name", "a", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    run = runs / "a"
    m = _metrics(run)
    assert [e["iteration"] for e in m["evals"]] == [2, 4]
    assert m["evals"][1]["loss"] < m["evals"][0]["loss"]  # losses fall on the fixed batch
    for e in [*m["evals"], m["final"]]:
        for key in ("bbox_AP", "segm_AP"):
            assert isinstance(e[key], float) and 0.0 <= e[key] <= 1.0
    assert m["final"]["score_thresh"] == 0.7
    assert "iterations_to_90pct_final_segm_AP" in m
    for name in ("config.json", "ap.png", "predictions.png", "last.pt"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "tempo-segment" and ckpt["position"]["iteration"] == 4
    assert "optimizer" in ckpt and {"python", "numpy", "torch"} <= set(ckpt["rng"])

    # --resume continues from iteration 4 in the same run folder.
    first_loss = m["evals"][0]["loss"]
    r = cli("segment", "--resume", run / "last.pt", "--max-iter", "5", "--eval-period", "2",
            *TINY)  # fmt: skip
    assert r.code == 0, r.err
    m = _metrics(run)
    assert [e["iteration"] for e in m["evals"]] == [2, 4, 5]
    assert m["evals"][2]["loss"] < first_loss  # the trained weights were loaded
    assert torch.load(run / "last.pt", weights_only=True)["position"]["iteration"] == 5


@pytest.mark.slow
def test_comparison_of_backbones(cli: Any, demo_root: Path, r18: Path, tmp_path: Path) -> None:
    r = cli("segment", "--path", "random", "--path", r18, "--backbone", "resnet18",
            "--max-iter", "1", "--eval-period", "1", "--name", "cmp", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    run = tmp_path / "runs" / "cmp"
    m = _metrics(run)
    assert [x["label"] for x in m["runs"]] == ["random", "r18"]
    assert [x["checkpoint"] for x in m["runs"]] == ["random", str(r18)]
    for x in m["runs"]:
        assert [e["iteration"] for e in x["evals"]] == [1]
        assert (Path(x["run_dir"]) / "metrics.json").is_file()
    assert m["evals"] == m["runs"][0]["evals"]
    assert (run / "segm_ap_comparison.png").is_file()


def _segment(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tempo_cli", "segment", *(str(a) for a in args)]


@pytest.mark.slow
def test_sigterm_mid_step_stops_between_steps_and_resumes_exactly(
    demo_root: Path, r18: Path, tmp_path: Path
) -> None:
    """SIGTERM lands inside iteration 3 (each takes ~1 s here; it is sent 0.3 s after the
    evaluation at 2 wrote last.pt): that step finishes, last.pt holds iteration 3, exit 130;
    `--resume` (without --data: the run's settings come back) ends where an uninterrupted
    run ends, with the same weights and evaluations."""
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
    time.sleep(0.3)  # iteration 3 is now in flight
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and f"--resume {last}" in err
    state = torch.load(last, weights_only=True)
    assert state["position"]["iteration"] == 3  # the step in flight finished, no more
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
    assert [e["iteration"] for e in resumed["evals"]] == [2, 4]
    assert resumed["final"] == straight["final"]
    a = torch.load(runs / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
