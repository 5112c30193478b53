"""Barlow Twins loss: lightly 1.2.35's formula (default), the biased variant, global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss


def textbook(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, eps: float = 1e-5) -> torch.Tensor:
    """SPEC.md with the biased std + eps: standardise each dim, C = z_a^T z_b / N, sum."""
    n, d = z_a.shape

    def std(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = std(z_a).T @ std(z_b) / n
    loss = torch.zeros((), dtype=z_a.dtype)
    for i in range(d):
        loss = loss + (1 - c[i, i]) ** 2
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return loss + lam * off


def lightly_1_2_35(z_a: torch.Tensor, z_b: torch.Tensor, lam: float) -> torch.Tensor:
    """lightly 1.2.35's `BarlowTwinsLoss.forward` (the version the reference pins), one
    process: the unbiased `std(0)`, no epsilon."""
    z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)  # N x D
    z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0)
    n, d = z_a.shape
    c = torch.mm(z_a_norm.T, z_b_norm) / n  # D x D
    c_diff = (c - torch.eye(d, dtype=c.dtype)).pow(2)
    c_diff[~torch.eye(d, dtype=torch.bool)] *= lam
    return c_diff.sum()


def correlated(n: int, d: int, seed: int, noise: float = 0.5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    return z_a, z_a + noise * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("lam", [1e-3, 5e-3, 0.1])
@pytest.mark.parametrize(("n", "d"), [(32, 16), (20, 64), (200, 48)])
def test_default_equals_lightly_1_2_35_with_gradients(lam: float, n: int, d: int) -> None:
    z_a, z_b = correlated(n, d, seed=n + d)
    ours_in = [z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)]
    ref_in = [z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)]
    ours = BarlowTwinsLoss(lambda_param=lam)(*ours_in)
    ref = lightly_1_2_35(*ref_in, lam)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    ours.backward()
    ref.backward()
    for a, b in zip(ours_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_unbiased_on_diagonal_floor_is_d_over_n_squared() -> None:
    """Identical views: C_ii = (N-1)/N with the unbiased std, so the on-diagonal term is
    D/N^2 (5.1 for the R50 recipe's batch 20 at D=2048); the biased std reaches ~0."""
    z, _ = correlated(20, 64, seed=3)
    unbiased = BarlowTwinsLoss(lambda_param=0.0)(z, z)
    assert unbiased.item() == pytest.approx(64 / 20**2, rel=1e-9)
    assert BarlowTwinsLoss(lambda_param=0.0, std="biased")(z, z).item() < 1e-8
    # Highly correlated views at batch 20: the two differ by about 2x.
    z_a, z_b = correlated(20, 64, seed=4, noise=0.05)
    ub = BarlowTwinsLoss(lambda_param=1e-3)(z_a, z_b).item()
    b = BarlowTwinsLoss(lambda_param=1e-3, std="biased")(z_a, z_b).item()
    assert ub > 1.5 * b


def test_constant_dimension_standardises_to_zero() -> None:
    """Where lightly 1.2.35 gives NaN (0/0), a constant dimension counts as all-zero:
    C_ii = 0, so it adds exactly 1; values and gradients stay finite."""
    z_a, z_b = correlated(16, 8, seed=5)
    z_a[:, 2] = 0.1  # not exactly representable: the mean is off by a rounding error
    z_b[:, 2] = 0.1
    a, b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    loss = BarlowTwinsLoss(lambda_param=5e-3)(a, b)
    loss.backward()
    keep = [i for i in range(8) if i != 2]
    ref = lightly_1_2_35(z_a[:, keep], z_b[:, keep], 5e-3) + 1
    torch.testing.assert_close(loss, ref)
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert torch.isnan(lightly_1_2_35(z_a, z_b, 5e-3))


@pytest.mark.parametrize("lam", [1e-3, 5e-3, 0.1])
def test_biased_equals_textbook(lam: float) -> None:
    z_a, z_b = correlated(32, 16, seed=0)
    got = BarlowTwinsLoss(lambda_param=lam, std="biased")(z_a, z_b)
    torch.testing.assert_close(got, textbook(z_a, z_b, lam), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [1e-3, 5e-3])
def test_biased_equals_installed_lightly(lam: float) -> None:
    """Newer lightly (the test extra) standardises with the biased std + eps."""
    lightly_loss = pytest.importorskip("lightly.loss").BarlowTwinsLoss
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        z_a = torch.randn(64, 128, generator=g)
        z_b = torch.randn(64, 128, generator=g)
        ours = BarlowTwinsLoss(lambda_param=lam, std="biased")(z_a, z_b)
        ref = lightly_loss(lambda_param=lam)(z_a, z_b)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_standardizations_match_the_setting() -> None:
    from typing import get_args

    from tempo_cli.models.barlow_twins_loss import STANDARDIZATIONS
    from tempo_cli.settings.pretrain import PretrainSettings

    allowed = get_args(PretrainSettings.model_fields["loss_std"].annotation)
    assert set(allowed) == set(STANDARDIZATIONS)
    assert PretrainSettings.model_fields["loss_std"].default == "unbiased"
    with pytest.raises(ValueError, match="std must be one of"):
        BarlowTwinsLoss(std="population")


def test_half_precision_is_upcast() -> None:
    z = torch.randn(16, 8)
    loss = BarlowTwinsLoss()(z.bfloat16(), z.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_gather_without_process_group_is_local() -> None:
    z_a, z_b = torch.randn(8, 4), torch.randn(8, 4)
    a = BarlowTwinsLoss(gather_distributed=True)(z_a, z_b)
    torch.testing.assert_close(a, BarlowTwinsLoss()(z_a, z_b))


STDS = ("unbiased", "biased")


def _shard(rank: int, n: int) -> slice:
    """Unequal shards (5 and n-5 rows), as the last batch of an epoch may be."""
    return slice(0, 5) if rank == 0 else slice(5, n)


def _worker(rank: int, world: int, port: int, z_a: torch.Tensor, z_b: torch.Tensor, q) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sl = _shard(rank, z_a.shape[0])
        for std in STDS:
            a = z_a[sl].clone().requires_grad_(True)
            b = z_b[sl].clone().requires_grad_(True)
            loss = BarlowTwinsLoss(lambda_param=5e-3, gather_distributed=True, std=std)(a, b)
            loss.backward()
            # numpy, not tensors: shared-memory tensors die with this process.
            q.put((std, rank, loss.item(), a.grad.numpy(), b.grad.numpy()))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
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
    results = [q.get(timeout=120) for _ in range(len(procs) * len(STDS))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for std in STDS:
        a = z_a.clone().requires_grad_(True)
        b = z_b.clone().requires_grad_(True)
        ref = BarlowTwinsLoss(lambda_param=5e-3, std=std)(a, b)
        ref.backward()
        mine = [r for r in results if r[0] == std]
        assert sorted(r[1] for r in mine) == list(range(world))
        for _, rank, loss, ga, gb in mine:
            assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
            sl = _shard(rank, z_a.shape[0])
            ga, gb = torch.from_numpy(ga), torch.from_numpy(gb)
            torch.testing.assert_close(ga / world, a.grad[sl], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(gb / world, b.grad[sl], rtol=1e-5, atol=1e-5)
    # The default (unbiased) over the gathered batch is lightly 1.2.35's one-process loss.
    assert [r[2] for r in results if r[0] == "unbiased"][0] == pytest.approx(
        lightly_1_2_35(z_a, z_b, 5e-3).item(), rel=1e-9
    )


_PORT: list[int] = []


def _free_port_cached() -> int:
    if not _PORT:
        _PORT.append(_free_port())
    return _PORT[0]
