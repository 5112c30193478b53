"""Distributed pre-training with 2 CPU processes (gloo), as torchrun would start them.

(a) On fixed embedding shards the gathered Barlow Twins loss equals the one-process loss
    on the concatenated batch, and each rank's embedding gradient is world_size times the
    one-process gradient of its shard (DDP's averaging divides that factor out).
(b) An end-to-end 2-process run trains, only rank 0 writes, and both ranks end with
    identical weights.
(c) Under torchrun, a run stopped mid-epoch and resumed ends with the uninterrupted model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun_env(rank: int, port: int) -> None:
    """The environment torchrun gives each process."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def _embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n, d = 12, 16
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64)
    z_b = 0.5 * z_a + torch.randn(n, d, generator=g, dtype=torch.float64)
    return z_a, z_b


def _loss_worker(rank: int, port: int, lam: float) -> None:
    from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss

    _torchrun_env(rank, port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        z_a, z_b = _embeddings()
        # One process, whole batch.
        fa, fb = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
        full = BarlowTwinsLoss(lam)(fa, fb)
        full.backward()
        # This rank's shard, loss over the gathered global batch.
        n = len(z_a) // WORLD
        sl = slice(rank * n, (rank + 1) * n)
        sa, sb = z_a[sl].clone().requires_grad_(), z_b[sl].clone().requires_grad_()
        loss = BarlowTwinsLoss(lam, gather_distributed=True)(sa, sb)
        loss.backward()
        torch.testing.assert_close(loss, full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sa.grad, WORLD * fa.grad[sl], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sb.grad, WORLD * fb.grad[sl], atol=1e-5, rtol=1e-5)
        # What DDP does next (average over ranks) gives back the one-process gradient.
        torch.testing.assert_close(sa.grad / WORLD, fa.grad[sl], atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_and_gradients_match_one_process() -> None:
    mp.spawn(_loss_worker, args=(_free_port(), 5e-3), nprocs=WORLD, join=True)


def _train_worker(rank: int, port: int, frames: str, out: str) -> None:
    from tempo_cli.pretrain import train
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.pretrain import PretrainSettings

    _torchrun_env(rank, port)
    # Give each rank its own runs folder: rank 1's must stay empty.
    os.environ["TEMPO_RUNS_DIR"] = str(Path(out) / f"runs{rank}")
    settings = load_settings(
        PretrainSettings,
        {
            "data": frames,
            "backbone": "resnet18",
            "init": "random",
            "image_size": 32,
            "batch_size": 8,
            "epochs": 2,
            "optimizer": "adamw",
            "lr": 1e-3,
            "proximity": 3,
            "name": "ddp",
            "quiet": True,
            "device": "cpu",
        },
    )
    result = train(settings)
    state = {f"backbone.{k}": v for k, v in result.backbone.state_dict().items()}
    state.update({f"head.{k}": v for k, v in result.head.state_dict().items()})
    torch.save(state, Path(out) / f"weights{rank}.pt")


@pytest.mark.slow
def test_two_process_run_trains_with_rank0_writing_and_equal_weights(
    tmp_path: Path, tiny_frames: Path
) -> None:
    mp.spawn(
        _train_worker,
        args=(_free_port(), str(tiny_frames), str(tmp_path)),
        nprocs=WORLD,
        join=True,
    )
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    run0 = tmp_path / "runs0" / "ddp"
    assert {"config.json", "metrics.json", "last.pt", "model.pt"} <= {
        p.name for p in run0.iterdir()
    }
    assert not (tmp_path / "runs1").exists() or not any((tmp_path / "runs1").rglob("*"))
    import json

    metrics = json.loads((run0 / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    # 48 frames, 24 anchors per rank, 4 pairs per rank per step -> 6 steps per epoch.
    assert [e["steps"] for e in metrics["epochs"]] == [6, 6]
    assert all(e["loss"] == e["loss"] and e["loss"] > 0 for e in metrics["epochs"])
    # It trained: the saved model differs from a fresh random init with the same seed.
    from tempo_cli.models.checkpoint import load_model

    saved = load_model(run0 / "model.pt")
    for k, v in saved.backbone.state_dict().items():
        assert torch.equal(v, w0[f"backbone.{k}"]), k
    torch.manual_seed(0)
    from tempo_cli.models.backbones import build_resnet

    fresh = build_resnet("resnet18", "random").state_dict()
    assert not torch.equal(fresh["conv1.weight"], w0["backbone.conv1.weight"])


@pytest.fixture
def tiny_frames(tmp_path: Path, write_frames) -> Path:
    return write_frames(tmp_path / "frames", 48)


def _torchrun_pretrain(frames: Path, runs: Path, name: str, *extra: str) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 -m tempo_cli pretrain` on CPU (gloo), in a
    session of its own (a Ctrl-C reaches every process of it, as from a terminal)."""
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(WORLD), "-m", "tempo_cli", "pretrain", "--data", str(frames), "--backbone",
        "resnet18", "--init", "random", "--image-size", "32", "--batch-size", "8", "--epochs",
        "1", "--optimizer", "adamw", "--proximity", "3", "--device", "cpu", "--quiet",
        "--name", name, *extra,
    ]  # fmt: skip
    # torchrun reads `--monitor` as its own `--monitor-interval` (argparse takes prefixes):
    # the environment says it (docs/pretrain.md).
    env = {**os.environ, "TEMPO_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    env["TEMPO_MONITOR"] = "none"
    return subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=runs.parent, start_new_session=True,
    )  # fmt: skip


def _position(last: Path) -> dict | None:
    from tempo_cli.models.checkpoint import load_model

    try:
        return load_model(last).training_state["position"]
    except Exception:  # not written yet, or being replaced
        return None


@pytest.mark.slow
def test_two_process_run_stopped_mid_epoch_resumes_to_the_same_model(
    tmp_path: Path, write_frames
) -> None:
    """Ctrl-C mid-epoch, then `--resume`: the model equals an uninterrupted run's, BatchNorm
    running statistics included (each step starts from rank 0's buffers, so last.pt must
    hold rank 0's own, not the ranks' average)."""
    frames, runs = write_frames(tmp_path / "frames", 160), tmp_path / "runs"
    full = _torchrun_pretrain(frames, runs, "full")
    assert full.wait(timeout=600) == 0, full.communicate()[1]

    # last.pt every 0.06 s: a save mid-epoch 1 says the run is there; stop it right after.
    cut = _torchrun_pretrain(frames, runs, "cut", "--checkpoint-minutes", "0.001")
    last, deadline = runs / "cut" / "last.pt", time.monotonic() + 300
    while cut.poll() is None and time.monotonic() < deadline:
        pos = _position(last) if last.is_file() else None
        if pos is not None and pos["epoch"] == 0 and pos["batch"] >= 2:
            break
        time.sleep(0.05)
    assert cut.poll() is None, cut.communicate()[1]
    os.killpg(cut.pid, signal.SIGINT)
    _, err = cut.communicate(timeout=120)
    assert cut.returncode != 0, err
    pos = _position(last)
    assert pos is not None and pos["epoch"] == 0 and pos["batch"] > 0, pos  # mid-epoch 1

    resumed = _torchrun_pretrain(frames, runs, "cut", "--resume", str(last))
    assert resumed.wait(timeout=600) == 0, resumed.communicate()[1]
    from tempo_cli.models.checkpoint import load_model

    a, b = load_model(runs / "full/model.pt"), load_model(runs / "cut/model.pt")
    assert a.head is not None and b.head is not None
    for part in ("backbone", "head"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys()
        differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not differ, (part, differ[:5])
