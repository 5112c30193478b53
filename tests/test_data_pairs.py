"""Temporal pair sampling: exact pmfs (chi-square), O(1) samplers, epochs and sharding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from tempo_cli.data.pairs import epoch_pairs, partner_pmf, sample_partner, sample_partners
from tempo_cli.data.sequences import FrameStore
from tempo_cli.errors import TempoError, UsageError

DRAWS = 200_000


def _chi2_pvalue(draws: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square goodness of fit; cells with expected count < 5 are pooled into one."""
    counts = np.bincount(draws, minlength=len(pmf)).astype(np.float64)
    assert counts[pmf == 0].sum() == 0, "drew an index of probability 0"
    expected = pmf * len(draws)
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:  # nothing to pool
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize(
    ("pdf", "param", "n"),
    [
        ("uniform", 30, 200),  # reference setting
        ("uniform", 5, 8),  # tau beyond both ends
        ("normal", 10.0, 200),  # long sequence: discrete-normal offsets (sigma > 1)
        ("normal", 0.6, 50),  # small sigma: geometric proposal
        ("normal", 40.0, 30),  # short sequence: uniform proposal
    ],
)
@pytest.mark.parametrize("where", ["edge", "middle"])
def test_sampler_matches_exact_pmf(pdf: str, param: float, n: int, where: str) -> None:
    i = 0 if where == "edge" else n // 2
    rng = np.random.default_rng(1234)
    draws = sample_partners(np.full(DRAWS, i), np.full(DRAWS, n), pdf, param, rng)
    pmf = partner_pmf(i, n, pdf, param)
    assert draws.min() >= 0 and draws.max() < n and not (draws == i).any()
    assert _chi2_pvalue(draws, pmf) > 0.001


@pytest.mark.parametrize(
    ("pdf", "param", "n", "i"),
    [
        ("uniform", 30, 200, 0),
        ("uniform", 30, 200, 100),
        ("normal", 4.0, 60, 57),  # long sequence, near the far end
        ("normal", 0.6, 50, 25),  # small sigma
        ("normal", 40.0, 30, 0),  # short sequence
    ],
)
def test_scalar_sampler_same_law(pdf: str, param: float, n: int, i: int) -> None:
    rng = np.random.default_rng(7)
    draws = np.array([sample_partner(i, n, pdf, param, rng) for _ in range(20_000)])
    assert _chi2_pvalue(draws, partner_pmf(i, n, pdf, param)) > 0.001


def test_exact_pmfs() -> None:
    p = partner_pmf(0, 100, "uniform", 30)
    assert p[0] == 0 and np.allclose(p[1:31], 1 / 30) and p[31:].sum() == 0
    p = partner_pmf(50, 100, "uniform", 30)
    assert np.allclose(p[20:81][np.arange(61) != 30], 1 / 60) and p[50] == 0
    # normal: over ALL frames, proportional to the density, p(i) = 0.
    n, i, s = 40, 3, 5.0
    p = partner_pmf(i, n, "normal", s)
    w = np.exp(-((np.arange(n) - i) ** 2) / (2 * s * s))
    w[i] = 0
    assert np.allclose(p, w / w.sum(), rtol=1e-12, atol=0) and p.sum() == pytest.approx(1)


def test_tiny_and_huge_sigma() -> None:
    rng = np.random.default_rng(0)
    # sigma -> 0: the nearest neighbour(s) only, in equal parts in the middle.
    d = sample_partners(np.full(10_000, 5), np.full(10_000, 10), "normal", 0.05, rng)
    assert set(np.unique(d)) == {4, 6}
    d = sample_partners(np.zeros(1000, dtype=int), np.full(1000, 10), "normal", 0.05, rng)
    assert (d == 1).all()
    # sigma -> infinity: uniform over the other frames.
    d = sample_partners(np.full(DRAWS, 2), np.full(DRAWS, 12), "normal", 1e9, rng)
    assert _chi2_pvalue(d, partner_pmf(2, 12, "normal", 1e9)) > 0.001


def test_bad_parameters() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="--pdf"):
        sample_partner(0, 10, "laplace", 3, rng)
    with pytest.raises(UsageError, match="--proximity"):
        sample_partner(0, 10, "uniform", 0, rng)
    with pytest.raises(UsageError, match="--proximity"):
        sample_partner(0, 10, "normal", -1.0, rng)
    with pytest.raises(ValueError):
        sample_partner(0, 1, "uniform", 3, rng)


def _store(lengths: list[int]) -> FrameStore:
    import torch

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    frames = torch.zeros(sum(lengths), 3, 1, 1, dtype=torch.uint8)
    return FrameStore(frames, starts, lengths)


@pytest.mark.parametrize(("pdf", "param"), [("uniform", 30), ("normal", 25.0)])
def test_epoch_pairs_stay_in_sequence(pdf: str, param: float) -> None:
    store = _store([20, 1, 13, 300])  # the 1-frame sequence has no partner: skipped
    seq = store.sequence_ids()
    for epoch in range(3):
        a, p = epoch_pairs(store, pdf, param, seed=0, epoch=epoch)
        a, p = a.numpy(), p.numpy()
        assert sorted(a.tolist()) == [k for k in range(len(store)) if k != 20]
        assert (seq[a] == seq[p]).all() and (a != p).all()


def test_epoch_pairs_shuffled_and_reproducible() -> None:
    store = _store([500])
    a0, p0 = epoch_pairs(store, "uniform", 30, seed=1, epoch=0)
    a0b, p0b = epoch_pairs(store, "uniform", 30, seed=1, epoch=0)
    a1, _ = epoch_pairs(store, "uniform", 30, seed=1, epoch=1)
    a2, _ = epoch_pairs(store, "uniform", 30, seed=2, epoch=0)
    assert (a0 == a0b).all() and (p0 == p0b).all()
    assert not (a0 == a1).all() and not (a0 == a2).all()
    assert not (a0 == np.arange(500)).all()  # shuffled


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_sharding_covers_every_anchor_once(world_size: int) -> None:
    store = _store([101, 57, 2])
    full_a, full_p = epoch_pairs(store, "normal", 8.0, seed=3, epoch=4)
    parts = [
        epoch_pairs(store, "normal", 8.0, seed=3, epoch=4, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    anchors = np.concatenate([a.numpy() for a, _ in parts])
    partners = np.concatenate([p.numpy() for _, p in parts])
    assert sorted(anchors.tolist()) == list(range(len(store)))
    sizes = [len(a) for a, _ in parts]
    assert max(sizes) - min(sizes) <= 1
    # same permutation and same partners as a single process: independent of world size
    assert (anchors == full_a.numpy()).all() and (partners == full_p.numpy()).all()


def test_no_pairs_possible() -> None:
    with pytest.raises(TempoError, match="2 or more frames"):
        epoch_pairs(_store([1, 1]), "uniform", 3, seed=0, epoch=0)
