"""Temporal pair sampling (SPEC.md "Pre-training"): for anchor frame i of a sequence of n
frames, a partner j != i from

- `uniform`, parameter tau: uniform over {i-tau, ..., i+tau} \\ {i}, cut at 0 and n-1;
- `normal`, parameter sigma: p(j) proportional to exp(-(j-i)^2 / (2 sigma^2)) over ALL
  frames 0..n-1 of the sequence, p(i) = 0, renormalised.

`partner_pmf` builds the exact pmf (O(n), for tests and plots). The samplers never build
it: they draw in O(1) expected work per sample by exact rejection sampling, vectorised
over many anchors at once, so an epoch over millions of frames costs milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tempo_cli.errors import TempoError, UsageError

PDFS = ("uniform", "normal")
#: What a frame is paired with: a temporal neighbour, or itself (views differ by augmentation).
PAIRS = ("temporal", "same")


def check_pdf(pdf: str, param: float) -> None:
    """UsageError for an unknown pdf or an invalid proximity parameter."""
    if pdf not in PDFS:
        raise UsageError("--pdf", pdf, "one of: uniform, normal")
    if pdf == "uniform" and (param != int(param) or param < 1):
        raise UsageError("--proximity", param, "uniform needs an integer tau >= 1")
    if pdf == "normal" and not (param > 0 and math.isfinite(param)):
        raise UsageError("--proximity", param, "normal needs a finite sigma > 0")


def partner_pmf(i: int, n: int, pdf: str, param: float) -> np.ndarray:
    """The exact partner pmf of anchor i in a sequence of n frames -> float64 (n,).

    p[i] = 0 and p sums to 1. Needs n >= 2 (a single frame has no partner).
    """
    check_pdf(pdf, param)
    if n < 2 or not 0 <= i < n:
        raise ValueError(f"need n >= 2 and 0 <= i < n, got i={i}, n={n}")
    j = np.arange(n)
    if pdf == "uniform":
        tau = int(param)
        p = (np.abs(j - i) <= tau).astype(np.float64)
    else:
        # log-weights relative to the nearest neighbour (distance 1) keep the largest
        # weight at 1, so nothing overflows and the ratios are exact down to underflow.
        p = np.exp(-((j - i).astype(np.float64) ** 2 - 1.0) / (2.0 * param * param))
    p[i] = 0.0
    return p / p.sum()


def _positive_offsets(count: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`count` exact draws of k >= 1 with P(k) proportional to exp(-k^2 / (2 sigma^2)).

    sigma <= 1: k = 1 + m, where P(m) is proportional to exp(-m/sigma^2) * exp(-m^2/(2 sigma^2));
    propose m ~ Geometric(1 - exp(-1/sigma^2)) (= floor(sigma^2 * Exp(1))), accept with
    exp(-m^2 / (2 sigma^2)). Acceptance >= 1 - exp(-1/sigma^2) >= 0.63.
    sigma > 1: propose x ~ |N(0, sigma^2)|, k = ceil(x), accept with
    exp(-(k^2 - x^2) / (2 sigma^2)) <= 1; the accepted k has mass
    proportional to the integral over (k-1, k] of phi(x) exp(-(k^2-x^2)/(2 sigma^2)) dx,
    which is proportional to exp(-k^2/(2 sigma^2)): exact. Acceptance >= 0.6.
    Tails are exact too: no table, no truncation.
    """
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    s2 = 2.0 * sigma * sigma
    while todo.size:
        u = rng.random(todo.size)
        if sigma <= 1.0:
            m = np.floor(rng.exponential(size=todo.size) * sigma * sigma)
            ok = u < np.exp(-(m * m) / s2)
            k = m + 1.0
        else:
            x = np.abs(rng.normal(0.0, sigma, size=todo.size))
            k = np.ceil(x)
            ok = (k >= 1.0) & (u < np.exp(-(k * k - x * x) / s2))
        # float -> int64 is safe: |N(0, sigma)| draws stay far below 2**63 in practice,
        # and candidates beyond the sequence are rejected by the caller anyway.
        out[todo[ok]] = np.minimum(k[ok], 2.0**62).astype(np.int64)
        todo = todo[~ok]
    return out


def sample_partners(
    i: np.ndarray, n: np.ndarray, pdf: str, param: float, rng: np.random.Generator
) -> np.ndarray:
    """Vectorised exact sampler: anchors i (M,) in sequences of lengths n (M,) -> j (M,).

    Local indices (0 <= i < n, n >= 2). O(1) expected work per anchor for every tau/sigma:
    - uniform: j = lo + U{0..k-1}, skipping i (no rejection at all);
    - normal, short sequence (n - 1 <= 2 sigma): propose j uniform on the n - 1 candidates,
      accept with exp(-((j-i)^2 - 1) / (2 sigma^2)) (>= exp(-2) there);
    - normal, long sequence: propose offset +-k from the discrete normal on the nonzero
      integers (_positive_offsets), accept if i +- k lies inside 0..n-1 (at least about
      half the mass lies inside, since n - 1 > 2 sigma).
    """
    check_pdf(pdf, param)
    i = np.asarray(i, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    i, n = np.broadcast_arrays(i, n)
    if i.size and (n.min() < 2 or i.min() < 0 or (i >= n).any()):
        raise ValueError("need n >= 2 and 0 <= i < n for every anchor")
    j = np.empty(i.shape, dtype=np.int64)
    if pdf == "uniform":
        tau = int(param)
        lo = np.maximum(0, i - tau)
        hi = np.minimum(n - 1, i + tau)
        k = hi - lo  # candidates without i (i always lies in [lo, hi])
        j = lo + np.floor(rng.random(i.shape) * k).astype(np.int64)
        j = np.minimum(j, hi - 1)  # guards a float rounding of random() * k up to k
        return j + (j >= i)

    sigma = float(param)
    s2 = 2.0 * sigma * sigma
    short = (n - 1) <= 2.0 * sigma
    todo = np.flatnonzero(short)
    while todo.size:  # short sequences: uniform proposal over all candidates
        ii, nn = i[todo], n[todo]
        c = np.minimum(np.floor(rng.random(todo.size) * (nn - 1)).astype(np.int64), nn - 2)
        c = c + (c >= ii)
        d = (c - ii).astype(np.float64)
        ok = rng.random(todo.size) < np.exp(-(d * d - 1.0) / s2)
        j[todo[ok]] = c[ok]
        todo = todo[~ok]
    todo = np.flatnonzero(~short)
    while todo.size:  # long sequences: discrete-normal offset, rejected if outside
        k = _positive_offsets(todo.size, sigma, rng)
        sign = np.where(rng.random(todo.size) < 0.5, -1, 1)
        c = i[todo] + sign * k
        ok = (c >= 0) & (c < n[todo])
        j[todo[ok]] = c[ok]
        todo = todo[~ok]
    return j


def sample_partner(i: int, n: int, pdf: str, param: float, rng: np.random.Generator) -> int:
    """One partner of anchor i in a sequence of n frames (same exact law as partner_pmf).

    The scalar twin of sample_partners (same proposals and acceptance rules, without the
    array overhead): a few microseconds per draw, e.g. inside a Dataset's __getitem__.
    """
    check_pdf(pdf, param)
    if n < 2 or not 0 <= i < n:
        raise ValueError(f"need n >= 2 and 0 <= i < n, got i={i}, n={n}")
    if pdf == "uniform":
        tau = int(param)
        lo, hi = max(0, i - tau), min(n - 1, i + tau)
        j = lo + int(rng.integers(hi - lo))
        return j + (j >= i)
    sigma = float(param)
    s2 = 2.0 * sigma * sigma
    if n - 1 <= 2.0 * sigma:
        while True:
            c = int(rng.integers(n - 1))
            c += c >= i
            if rng.random() < math.exp(-((c - i) ** 2 - 1) / s2):
                return c
    while True:
        if sigma <= 1.0:
            m = math.floor(rng.exponential() * sigma * sigma)
            if rng.random() >= math.exp(-(m * m) / s2):
                continue
            k = m + 1
        else:
            x = abs(rng.normal(0.0, sigma))
            k = math.ceil(x)
            if k < 1 or rng.random() >= math.exp(-(k * k - x * x) / s2):
                continue
        c = i - k if rng.random() < 0.5 else i + k
        if 0 <= c < n:
            return c


def epoch_pairs(
    store,
    pdf: str,
    param: float,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pairs: str = "temporal",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of pairs for this rank -> (anchors (M,), partners (M,)), int64 global indices.

    Every frame of every sequence with >= 2 frames is an anchor exactly once per epoch
    (single-frame sequences have no partner and are skipped). The order is a permutation
    drawn from (seed, epoch), identical on every rank; rank r takes the contiguous slice
    [r*A/W, (r+1)*A/W) of it (sizes differ by at most 1; the union over ranks is every
    anchor once). Partners are drawn for all anchors from (seed, epoch) too, so the pairs do
    not depend on the number of ranks. A partner always lies in its anchor's sequence.

    pairs: `temporal` (the above) or `same`: every frame of every sequence (single frames
    too) is its own partner, in the same shuffled order, one pair per frame (classic image
    self-supervision: the two views differ only by augmentation).

    store: a FrameStore (or anything with `starts` and `lengths`).
    """
    check_pdf(pdf, param)
    if pairs not in PAIRS:
        raise UsageError("--pairs", pairs, "one of: " + ", ".join(PAIRS))
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    starts = np.asarray(store.starts, dtype=np.int64)
    lengths = np.asarray(store.lengths, dtype=np.int64)
    usable = lengths >= (1 if pairs == "same" else 2)
    if not usable.any():
        raise TempoError(
            "no sequence has 2 or more frames, so no temporal pair exists; give more frames"
        )
    seq = np.repeat(np.flatnonzero(usable), lengths[usable])  # sequence of each anchor
    local = np.concatenate([np.arange(m) for m in lengths[usable]])  # index within it
    rng = np.random.default_rng([seed % 2**64, epoch % 2**64])  # SeedSequence wants >= 0
    order = rng.permutation(seq.size)
    if pairs == "same":
        partner_local = local
    else:
        partner_local = sample_partners(local, lengths[seq], pdf, param, rng)
    anchors = starts[seq] + local
    partners = starts[seq] + partner_local
    total = order.size
    mine = order[rank * total // world_size : (rank + 1) * total // world_size]
    return torch.from_numpy(anchors[mine]), torch.from_numpy(partners[mine])
