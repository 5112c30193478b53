"""Distributed pre-training with 2 CPU processes (gloo), as torchrun would start them.

(a) On fixed embedding shards the gathered Barlow Twins loss equals the one-process loss
    on the concatenated batch, and each rank's embedding gradient is world_size times the
    one-process gradient of its shard (DDP's averaging divides that factor out).
(b) An end-to-end 2-process run trains, only rank 0 writes, and both ranks end with
    identical weights.
"""

from __future__ import annotations

import os
import socket
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
