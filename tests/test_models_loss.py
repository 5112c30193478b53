"""Barlow Twins loss: textbook formula, lightly's implementation, global-batch equality."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss


def textbook(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, eps: float = 1e-5) -> torch.Tensor:
    """SPEC.md: standardise each dim over the batch, C = z_a^T z_b / N, sum the terms."""
    n, d = z_a.shape

    def std(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = std(z_a).T @ std(z_b) / n
    loss = torch.zeros((), dtype=z_a.dtype)
    for i in range(d):
        loss = loss + (1 - c[i, i]) ** 2
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return loss + lam * off


@pytest.mark.parametrize("lam", [1e-3, 5e-3, 0.1])
def test_equals_textbook(lam: float) -> None:
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(32, 16, generator=g, dtype=torch.float64) * 3 + 1
    z_b = z_a + 0.5 * torch.randn(32, 16, generator=g, dtype=torch.float64)
    got = BarlowTwinsLoss(lambda_param=lam)(z_a, z_b)
    torch.testing.assert_close(got, textbook(z_a, z_b, lam), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [1e-3, 5e-3])
def test_equals_lightly(lam: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss").BarlowTwinsLoss
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        z_a = torch.randn(64, 128, generator=g)
        z_b = torch.randn(64, 128, generator=g)
        ours = BarlowTwinsLoss(lambda_param=lam)(z_a, z_b)
        ref = lightly_loss(lambda_param=lam)(z_a, z_b)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_half_precision_is_upcast() -> None:
    z = torch.randn(16, 8)
    loss = BarlowTwinsLoss()(z.bfloat16(), z.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_gather_without_process_group_is_local() -> None:
    z_a, z_b = torch.randn(8, 4), torch.randn(8, 4)
    a = BarlowTwinsLoss(gather_distributed=True)(z_a, z_b)
    torch.testing.assert_close(a, BarlowTwinsLoss()(z_a, z_b))


def _shard(rank: int, n: int) -> slice:
    """Unequal shards (5 and n-5 rows), as the last batch of an epoch may be."""
    return slice(0, 5) if rank == 0 else slice(5, n)


def _worker(rank: int, world: int, port: int, z_a: torch.Tensor, z_b: torch.Tensor, q) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sl = _shard(rank, z_a.shape[0])
        a = z_a[sl].clone().requires_grad_(True)
        b = z_b[sl].clone().requires_grad_(True)
        loss = BarlowTwinsLoss(lambda_param=5e-3, gather_distributed=True)(a, b)
        loss.backward()
        # numpy, not tensors: shared-memory tensors die with this process.
        q.put((rank, loss.item(), a.grad.numpy(), b.grad.numpy()))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_equals_global_batch() -> None:
    """2 gloo processes on shards == one process on the whole batch; gradients match
    once the all-gather backward's world-size factor is divided out (as DDP does)."""
    world = 2
    g = torch.Generator().manual_seed(2)
    z_a = torch.randn(12, 6, generator=g, dtype=torch.float64)
    z_b = z_a + torch.randn(12, 6, generator=g, dtype=torch.float64)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, world, _free_port_cached(), z_a, z_b, q))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = sorted((q.get(timeout=120) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    a = z_a.clone().requires_grad_(True)
    b = z_b.clone().requires_grad_(True)
    ref = BarlowTwinsLoss(lambda_param=5e-3)(a, b)
    ref.backward()
    for rank, loss, ga, gb in results:
        assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
        sl = _shard(rank, z_a.shape[0])
        ga, gb = torch.from_numpy(ga), torch.from_numpy(gb)
        torch.testing.assert_close(ga / world, a.grad[sl], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gb / world, b.grad[sl], rtol=1e-5, atol=1e-5)


_PORT: list[int] = []


def _free_port_cached() -> int:
    if not _PORT:
        _PORT.append(_free_port())
    return _PORT[0]
