"""Exact t-SNE (van der Maaten and Hinton, 2008) in numpy, for maps of up to a few thousand
points.

The recipe is scikit-learn's `TSNE(method="exact", init="pca", learning_rate="auto")`:
Gaussian conditionals with perplexity 30 found by binary search, P symmetrised, a Student-t
(one degree of freedom) map, early exaggeration 12 for the first 250 of 1,000 steps with
momentum 0.5 (then 0.8), per-coordinate gains (+0.2 / x0.8, at least 0.01) and learning rate
max(n / 12 / 4, 50). The start is the first two principal components scaled to a standard
deviation of 1e-4, with each component's sign fixed (its largest coordinate positive), so
the map is a pure function of the points: no random draw at all. Time and memory are
O(n^2) per step (why docs/embed.md measures it against UMAP before choosing it).
"""

from __future__ import annotations

import numpy as np

PERPLEXITY = 30.0
STEPS = 1000
EXAGGERATION = 12.0
EXAGGERATION_STEPS = 250
_MACHINE_EPS = np.finfo(np.float64).eps


def pca_start(x: np.ndarray, dims: int = 2) -> np.ndarray:
    """The first `dims` principal components of x (n, d), each with its largest-magnitude
    coordinate positive, scaled so that the first has standard deviation 1e-4."""
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    y = u[:, :dims] * s[:dims]
    signs = np.sign(y[np.abs(y).argmax(axis=0), np.arange(y.shape[1])])
    y = y * np.where(signs == 0, 1.0, signs)
    std = y[:, 0].std()
    return y / (std if std > 0 else 1.0) * 1e-4


def squared_distances(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, n) of the rows of x (n, d), diagonal 0."""
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return d2


def joint_probabilities(d2: np.ndarray, perplexity: float, tol: float = 1e-5) -> np.ndarray:
    """Symmetric P (n, n), summing to 1: each row's Gaussian P(j|i) has entropy
    log(perplexity) (a binary search over its precision, all rows at once)."""
    n = d2.shape[0]
    # Distances beyond each row's nearest point: exp() stays in range, P(j|i) is unchanged.
    nearest = np.where(np.eye(n, dtype=bool), np.inf, d2).min(axis=1, keepdims=True)
    shifted = d2 - nearest
    np.fill_diagonal(shifted, 0.0)
    target = np.log(perplexity)
    beta = np.ones(n)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    for _ in range(100):
        p = np.exp(-shifted * beta[:, None])
        np.fill_diagonal(p, 0.0)
        total = p.sum(axis=1)
        entropy = np.log(total) + beta * (shifted * p).sum(axis=1) / total
        diff = entropy - target
        if np.all(np.abs(diff) < tol):
            break
        wide = diff > 0  # entropy too high: the Gaussian is too wide, raise beta
        lo = np.where(wide, beta, lo)
        hi = np.where(wide, hi, beta)
        beta = np.where(
            wide, np.where(np.isinf(hi), beta * 2.0, (beta + hi) / 2.0), (beta + lo) / 2.0
        )
    conditional = p / total[:, None]
    joint = conditional + conditional.T
    return np.maximum(joint / joint.sum(), _MACHINE_EPS)


def tsne(x: np.ndarray, perplexity: float = PERPLEXITY, steps: int = STEPS) -> np.ndarray:
    """A 2-D map (n, 2) float32 of the rows of x (n, d); needs n >= 2.

    The perplexity is capped at (n - 1) / 3, as few points cannot have 30 neighbours.
    P is found in float64; the steps run in float32 (half the memory traffic of the n x n
    passes that dominate; the gradient agrees with float64 to ~1e-6 relative).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError("t-SNE needs at least 2 points")
    perplexity = max(min(float(perplexity), (n - 1) / 3.0), 1.0)
    p = joint_probabilities(squared_distances(x), perplexity).astype(np.float32)
    exaggerated = p * np.float32(EXAGGERATION)
    y = pca_start(x).astype(np.float32)
    lr = np.float32(max(n / EXAGGERATION / 4.0, 50.0))
    update, gains = np.zeros_like(y), np.ones_like(y)
    for step in range(steps):
        early = step < EXAGGERATION_STEPS
        grad = gradient(exaggerated if early else p, y)
        rising = update * grad < 0.0
        gains = np.maximum(np.where(rising, gains + 0.2, gains * 0.8), 0.01).astype(np.float32)
        update = np.float32(0.5 if early else 0.8) * update - lr * gains * grad
        y = y + update
    return y


def gradient(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d KL(P || Q) / d y (n, 2) for the Student-t map y (n, 2).

    With w_ij = 1 / (1 + |y_i - y_j|^2) (0 on the diagonal) and Q = w / sum(w), the
    gradient is 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j). Element-wise passes only: a BLAS
    product of an (n, n) by an (n, 2) matrix gains nothing, and its threads slow small
    maps down tenfold on a busy machine (benchmarks/embed_map.py).
    """
    dx = y[:, 0, None] - y[None, :, 0]
    dy = y[:, 1, None] - y[None, :, 1]
    w = dx * dx
    w += dy * dy
    w += 1.0
    np.reciprocal(w, out=w)
    np.fill_diagonal(w, 0.0)
    total = w.sum()
    pq = p * w
    w *= w
    w /= total
    pq -= w  # (p - w / total) * w
    dx *= pq
    dy *= pq
    return 4.0 * np.stack([dx.sum(axis=1), dy.sum(axis=1)], axis=1)
