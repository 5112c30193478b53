"""`tempo pretrain`: settings, the loop, reproducibility, resume, interruption, outputs.

Everything runs on tiny inputs: resnet18 at 32 px, 48 frames, batches of 16 (3 steps
per epoch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempo_cli.settings import load_settings
from tempo_cli.settings.pretrain import PretrainSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory, write_frames) -> Path:
    return write_frames(tmp_path_factory.mktemp("pretrain") / "frames", 48)


def tiny(frames: Path, **over: Any) -> PretrainSettings:
    """Settings of a tiny CPU run (3 steps per epoch), resolved like the CLI does."""
    values: dict[str, Any] = {
        "data": str(frames),
        "backbone": "resnet18",
        "init": "random",
        "image_size": 32,
        "batch_size": 16,
        "epochs": 2,
        "optimizer": "adamw",
        "lr": 1e-3,
        "proximity": 3,
        "quiet": True,
        "device": "cpu",
        "name": "t",
    }
    values.update(over)
    return load_settings(PretrainSettings, values)


def losses(metrics: dict[str, Any]) -> list[float]:
    return [e["loss"] for e in metrics["epochs"]]


# --- settings and CLI ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--lr", "0"], "--lr"),
        (["--l", "-1"], "--l"),
        (["--pdf", "cauchy"], "--pdf"),
        (["--proximity", "0"], "--proximity"),
        (["--proximity", "2.5"], "--proximity"),
        (["--batch-size", "1"], "--batch-size"),
        (["--optimizer", "adam"], "--optimizer"),
        (["--backbone", "vgg"], "--backbone"),
        (["--init", "no-such-file.pt"], "--init"),
        (["--resume", "no-such-file.pt"], "--resume"),
        (["--max-steps", "0"], "--max-steps"),
        (["--device", "tpu"], "--device"),
        (["--precision", "fp8"], "--precision"),
        (["--loss-std", "population"], "--loss-std"),
    ],
)
def test_invalid_options_exit_2_naming_the_option(cli, args: list[str], option: str) -> None:
    r = cli("pretrain", *args)
    assert r.code == 2, r.err
    assert f"invalid value for {option}:" in r.err
    assert "Traceback" not in r.err


def test_cli_aliases_env_and_config(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempo_cli.pretrain

    seen: list[PretrainSettings] = []
    monkeypatch.setattr(tempo_cli.pretrain, "run", lambda s: seen.append(s) or {})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[pretrain]\nepochs = 7\npdf = "normal"\nproximity = 2.5\n')
    monkeypatch.setenv("TEMPO_BATCH_SIZE", "32")
    r = cli("pretrain", "--lambda", "0.005", "--save_model", "x.pth", "--config", cfg)
    assert r.code == 0, r.err
    s = seen[-1]
    assert (s.l, s.save_model, s.epochs, s.pdf, s.proximity, s.batch_size) == (
        0.005,
        "x.pth",
        7,
        "normal",
        2.5,
        32,
    )
    # Defaults are the reference protocol.
    monkeypatch.delenv("TEMPO_BATCH_SIZE")
    d = PretrainSettings()
    assert (d.epochs, d.lr, d.l, d.pdf, d.proximity, d.batch_size) == (
        15,
        1e-3,
        1e-3,
        "uniform",
        30,
        200,
    )
    assert d.image_size == "auto" and d.resolved_image_size(None) == 128
    assert (d.backbone, d.init, d.optimizer, d.momentum, d.weight_decay) == (
        "resnet34",
        "imagenet",
        "sgd",
        0.0,
        1e-3,
    )
    r = cli("pretrain", "--l", "0.01", "--epochs", "3")
    assert r.code == 0 and seen[-1].l == 0.01 and seen[-1].epochs == 3


# --- the loop --------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_losses_and_exact_resume(frames: Path) -> None:
    from tempo_cli.pretrain import run

    straight = run(tiny(frames, name="straight"))
    assert len(straight["epochs"]) == 2
    assert all(np.isfinite(losses(straight)))
    run_dir = Path(os.environ["TEMPO_RUNS_DIR"]) / "straight"
    assert {"config.json", "metrics.json", "last.pt", "model.pt"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == straight["epochs"]
    assert json.loads((run_dir / "config.json").read_text())["command"] == "pretrain"

    # 1 epoch, then resume for the second: same per-epoch losses, exactly.
    first = run(tiny(frames, name="split", epochs=1))
    assert losses(first) == losses(straight)[:1]  # same seed -> same losses
    last = Path(first["last"])
    resumed = run(tiny(frames, name="split", epochs=2, resume=str(last)))
    assert losses(resumed) == losses(straight)

    # Stopped by --max-steps inside epoch 2, then resumed: the same again.
    part = run(tiny(frames, name="part", max_steps=4))
    assert part["epochs"][-1]["partial"] is True and part["steps"] == 4
    whole = run(tiny(frames, name="part", resume=str(Path(part["last"]))))
    assert losses(whole) == losses(straight)
    assert whole["steps"] == 6

    other = run(tiny(frames, name="other", seed=1, epochs=1))
    assert losses(other) != losses(straight)[:1]


def write_v1_last(path: Path, settings: PretrainSettings, **state: Any) -> Path:
    """A last.pt in the layout of tempo before the shared training envelope (version 1):
    a product checkpoint whose `training_state` is pre-training's own dict."""
    from tempo_cli.models.checkpoint import save_checkpoint

    return save_checkpoint(
        path,
        arch=state["arch"],
        backbone=state["backbone"],
        head=state["head"],
        meta=state["meta"],
        training_state={
            "kind": "tempo-pretrain",
            "version": 1,
            "settings": settings.model_dump(mode="json"),
            "position": state["position"],
            "optimizer": state["optimizer"],
            "scaler": state["scaler"] or {},
            "rng": state["rng"],
            "run_dir": str(state["run_dir"]),
            "world_size": state["world_size"],
        },
    )


@pytest.mark.slow
def test_last_pt_of_version_1_still_resumes_exactly(frames: Path, tmp_path: Path) -> None:
    import torch

    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run, train

    first = run(tiny(frames, name="v1", epochs=1))
    # Today's last.pt rewritten as version 1 would have written it (same weights, states).
    last = Path(first["last"])
    loaded = load_model(last)
    env = torch.load(last, weights_only=True)["training_state"]
    v1 = write_v1_last(
        tmp_path / "v1.pt",
        tiny(frames, name="v1", epochs=1),
        arch=loaded.arch,
        backbone=loaded.backbone,
        head=loaded.head,
        meta=loaded.meta,
        position=env["position"],
        optimizer=env["optimizer"],
        scaler=env["scaler"],
        rng=env["rng"],
        run_dir=env["payload"]["run_dir"],
        world_size=1,
    )
    # One more step from each: the same loss and weights.
    from_v2 = train(tiny(frames, name="from-v2", epochs=2, max_steps=4, resume=str(last)))
    from_v1 = train(tiny(frames, name="from-v1", epochs=2, max_steps=4, resume=str(v1)))
    assert losses(from_v1.metrics) == losses(from_v2.metrics)
    assert from_v1.metrics["steps"] == 4
    for a, b in zip(from_v1.backbone.parameters(), from_v2.backbone.parameters(), strict=True):
        assert torch.equal(a, b)
    # The resumed run writes the current envelope.
    assert (
        torch.load(from_v1.run_dir / "last.pt", weights_only=True)["training_state"]["version"] == 2
    )


def test_resume_of_a_model_without_training_state_is_one_line(cli, frames: Path) -> None:
    from tempo_cli.pretrain import run

    m = run(tiny(frames, name="plain", baseline=True))
    r = cli("pretrain", "--resume", m["checkpoint"])
    assert r.code == 1 and "not a `tempo pretrain` checkpoint" in r.err
    assert "--init" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_nonfinite_loss_exits_1_and_keeps_last_good_checkpoint(cli, frames: Path) -> None:
    from tempo_cli.pretrain import run

    run(tiny(frames, name="good", epochs=1))
    last = Path(os.environ["TEMPO_RUNS_DIR"]) / "good" / "last.pt"
    before = last.read_bytes()
    r = cli("pretrain", "--resume", last, "--epochs", "4", "--lr", "1e20")
    assert r.code == 1, r.err
    assert "non-finite" in r.err and str(last) in r.err
    assert last.read_bytes() == before
    from tempo_cli.models.checkpoint import load_model

    assert load_model(last).training_state["position"]["epoch"] == 1


def test_baseline_and_save_model_bare_name(frames: Path) -> None:
    from tempo_cli import places
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run
    from tempo_cli.pretrain.final import final_model_path

    m = run(tiny(frames, name="base", baseline=True, save_model="base.pth"))
    assert m["epochs"] == [] and m["steps"] == 0
    assert Path(m["checkpoint"]) == places.model_dir() / "base.pth"
    loaded = load_model("base.pth")  # found by name in the model directory
    assert loaded.arch == "resnet18" and loaded.head is not None
    assert final_model_path("sub/x.pt", Path("r")) == Path("sub/x.pt")
    assert final_model_path(None, Path("r")) == Path("r/model.pt")


def test_init_checkpoint_gives_its_image_size(cli, frames: Path) -> None:
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run

    m = run(tiny(frames, name="size32", baseline=True))  # image_size 32, recorded
    assert load_model(m["checkpoint"]).image_size == 32
    auto = tiny(frames, name="from32", baseline=True, init=m["checkpoint"])
    auto = auto.model_copy(update={"image_size": "auto"})
    m2 = run(auto)
    config = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "from32" / "config.json").read_text())
    assert config["image_size"] == 32 and load_model(m2["checkpoint"]).image_size == 32
    r = cli("pretrain", "--data", frames, "--init", m["checkpoint"], "--baseline",
            "--image-size", "48", "--name", "other", "--device", "cpu")  # fmt: skip
    assert r.code == 0, r.err
    assert "warning: --image-size 48 differs from the 32 px" in r.err


def test_video_file_as_data(tmp_path: Path) -> None:
    import av

    from tempo_cli.pretrain import run

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for k in range(24):
            img = np.full((32, 32, 3), 10 * k, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, "rgb24")))
        out.mux(stream.encode())
    m = run(tiny(video, name="video", batch_size=8, epochs=1, max_steps=2))
    assert m["steps"] == 2


@pytest.mark.slow
def test_sigint_saves_resumable_checkpoint_and_exits_130(frames: Path, tmp_path: Path) -> None:
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    args = [
        sys.executable, "-m", "tempo_cli", "pretrain", "--data", str(frames),
        "--backbone", "resnet18", "--init", "random", "--image-size", "32",
        "--batch-size", "16", "--epochs", "1000", "--optimizer", "adamw",
        "--proximity", "3", "--device", "cpu", "--name", "sig", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    last = runs / "sig" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), "training never reached the end of epoch 1"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    from tempo_cli.models.checkpoint import load_model

    state = load_model(last).training_state
    pos = state["position"]
    assert pos["step"] == 3 * pos["epoch"] + pos["batch"] and pos["step"] >= 3
    metrics = json.loads((runs / "sig" / "metrics.json").read_text())
    assert metrics["interrupted"] is True


@pytest.mark.slow
def test_eval_runs_linear_probe_and_saves_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_frames
) -> None:
    from PIL import Image

    import tempo_cli.pretrain.final as final
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run

    # SPEC.md's protocol inside pre-training; shortened below to keep the test quick.
    probe = final.PRETRAIN_EVAL_PROBE
    assert (probe.runs, probe.batch_size, probe.iterations, probe.lr) == (3, 10, 3000, 0.01)
    monkeypatch.setattr(final, "PRETRAIN_EVAL_PROBE", replace(probe, iterations=50))

    root = tmp_path / "ds"
    write_frames(root / "frames", 24)
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("test", 2)):
        for k, letter in enumerate(("cat", "dog")):
            (root / split / letter).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3)) + 150 * k
                Image.fromarray(img.astype(np.uint8)).save(root / split / letter / f"{i}.png")
    m = run(tiny(root, name="ev", batch_size=8, epochs=1, max_steps=1, eval=True))
    rec = m["linear_eval"]
    assert rec["runs"] == 3 and rec["samples_pc"] is None
    assert 0.0 <= rec["accuracy_final_mean"] <= 1.0
    saved = load_model(m["checkpoint"])
    assert saved.linear is not None and saved.linear.out_features == 2
    assert saved.class_names == ["cat", "dog"] and saved.head is not None


def test_eval_without_labelled_splits_is_a_usage_error(cli, frames: Path) -> None:
    r = cli("pretrain", "--data", frames, "--eval", "--init", "random", "--backbone", "resnet18")
    assert r.code == 2 and "--eval" in r.err


# --- precision and the loss standardisation -------------------------------------------


def test_precision_modes_resolve_per_device() -> None:
    from typing import get_args

    from tempo_cli.errors import UsageError
    from tempo_cli.pretrain.precision import BF16, FP16, FP32, PRECISIONS

    field = PretrainSettings.model_fields["precision"]
    assert set(get_args(field.annotation)) == set(PRECISIONS) and field.default == "auto"
    auto = PRECISIONS["auto"]
    assert auto.resolve("cuda", cuda_bf16=True) is BF16
    for device, bf16 in [("cuda", False), ("cpu", True), ("mps", True)]:
        assert auto.resolve(device, cuda_bf16=bf16) is FP32  # fp32 everywhere else
    assert FP16.resolve("cuda", cuda_bf16=False) is FP16
    with pytest.raises(UsageError, match="--precision"):
        BF16.resolve("cuda", cuda_bf16=False)
    # A gradient scaler only for fp16 on CUDA; fp32 is the reference's plain arithmetic.
    assert [p.uses_scaler("cuda") for p in (FP16, BF16, FP32)] == [True, False, False]
    assert not FP16.uses_scaler("cpu")
    assert (FP32.dtype, FP32.channels_last, BF16.channels_last) == (None, False, True)


@pytest.mark.slow
def test_bf16_autocast_on_cpu_trains_saves_and_resumes(frames: Path) -> None:
    """The mixed-precision path (autocast, channels-last) on CPU: resnet18 at 32 px."""
    import torch

    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run, train

    fp32 = run(tiny(frames, name="fp32", precision="fp32", max_steps=2))
    auto = run(tiny(frames, name="auto", max_steps=2))  # auto on a CPU: fp32
    assert (fp32["precision"], auto["precision"]) == ("fp32", "fp32")
    assert losses(auto) == losses(fp32)

    part = train(tiny(frames, name="bf16", precision="bf16", max_steps=2))
    assert part.metrics["precision"] == "bf16"
    assert part.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(np.isfinite(losses(part.metrics)))
    assert losses(part.metrics) != losses(fp32)  # bfloat16 arithmetic did run
    last = Path(part.metrics["last"])
    assert load_model(last).training_state["settings"]["precision"] == "bf16"
    whole = run(tiny(frames, name="bf16", max_steps=4, resume=str(last)))
    assert whole["precision"] == "bf16" and whole["steps"] == 4  # the saved choice
    assert all(np.isfinite(losses(whole))) and len(whole["epochs"]) == 2
    model = load_model(whole["checkpoint"])
    assert all(torch.isfinite(p).all() for p in model.backbone.parameters())


@pytest.mark.slow
def test_loss_std_default_and_old_files_keep_biased(frames: Path, tmp_path: Path) -> None:
    """Default unbiased (the reference's); a last.pt from before --loss-std resumes biased."""
    import torch

    from tempo_cli.pretrain import run
    from tempo_cli.pretrain.state import load_resume, resumed_settings

    m = run(tiny(frames, name="std", epochs=1, max_steps=1))
    config = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "std" / "config.json").read_text())
    assert config["loss_std"] == "unbiased"
    ckpt = torch.load(m["last"], weights_only=True)
    del ckpt["training_state"]["settings"]["loss_std"]
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    state = load_resume(old)
    assert resumed_settings(tiny(frames), state).loss_std == "biased"
    assert resumed_settings(tiny(frames, loss_std="unbiased"), state).loss_std == "unbiased"
    biased = run(tiny(frames, name="std-b", epochs=1, max_steps=1, loss_std="biased"))
    assert losses(biased) != losses(m)


@pytest.mark.slow
def test_adamw_is_fused_and_an_older_last_pt_resumes_fused(frames: Path, tmp_path: Path) -> None:
    """AdamW runs PyTorch's fused kernel on CPU; a last.pt written before that (its
    optimizer state says `fused: None`, the per-parameter loop) resumes with the kernel of
    the device it resumes on: the same losses and weights as today's last.pt."""
    import torch

    from tempo_cli.pretrain import run, train
    from tempo_cli.pretrain.step import make_optimizer

    s = tiny(frames, name="f")
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(params, s).param_groups[0]["fused"] is True
    sgd = tiny(frames, name="f", optimizer="sgd")
    assert not make_optimizer(params, sgd).param_groups[0].get("fused")

    last = Path(run(tiny(frames, name="f", epochs=1))["last"])
    env = torch.load(last, weights_only=True)
    groups = env["training_state"]["optimizer"]["param_groups"]
    assert all(g["fused"] is True for g in groups)
    for g in groups:
        g["fused"] = None  # as the loop wrote it
    older = tmp_path / "older-last.pt"
    torch.save(env, older)
    now = train(tiny(frames, name="from-now", epochs=2, max_steps=4, resume=str(last)))
    old = train(tiny(frames, name="from-old", epochs=2, max_steps=4, resume=str(older)))
    assert losses(old.metrics) == losses(now.metrics)
    for a, b in zip(old.backbone.parameters(), now.backbone.parameters(), strict=True):
        assert torch.equal(a, b)
