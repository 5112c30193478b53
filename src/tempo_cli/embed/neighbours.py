"""Nearest neighbours by cosine similarity, and the seeded query images of the grids.

Features are L2-normalised, so cosine similarity is a dot product; a query set that is the
reference set itself (no train split) leaves each image out of its own neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Query rows scored at a time: bounds the (rows, M) similarity block.
_CHUNK = 1024


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of x (n, d) scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class Neighbours:
    """index: int64 (n, k) rows of the reference set, most similar first;
    similarity: float32 (n, k) their cosine similarities."""

    index: np.ndarray
    similarity: np.ndarray


def cosine_top_k(
    queries: np.ndarray, reference: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> Neighbours:
    """The k most cosine-similar reference rows of each query.

    queries: (n, d); reference: (m, d); exclude: int64 (n,), a reference row each query
    must not get (itself, when queries are drawn from the reference set), -1 for none.
    k is capped at the candidates. Ties keep the lower row first (a stable sort).
    """
    q = normalise(np.asarray(queries, dtype=np.float32))
    ref = normalise(np.asarray(reference, dtype=np.float32))
    k = max(min(int(k), ref.shape[0] - (0 if exclude is None else 1)), 0)
    index = np.empty((q.shape[0], k), np.int64)
    sims = np.empty((q.shape[0], k), np.float32)
    for lo in range(0, q.shape[0], _CHUNK):
        block = q[lo : lo + _CHUNK] @ ref.T
        if exclude is not None:
            rows = np.arange(block.shape[0])
            left_out = exclude[lo : lo + _CHUNK]
            block[rows[left_out >= 0], left_out[left_out >= 0]] = -np.inf
        order = np.argsort(-block, axis=1, kind="stable")[:, :k]
        index[lo : lo + _CHUNK] = order
        sims[lo : lo + _CHUNK] = np.take_along_axis(block, order, axis=1)
    return Neighbours(index, sims)


def neighbours_of(
    features: np.ndarray, reference: np.ndarray | None, k: int, rows: np.ndarray | None = None
) -> Neighbours:
    """Neighbours of the rows `rows` (None: all) of `features`: among `reference`, or
    (None) among the other rows of `features`, each image left out of its own list."""
    rows = np.arange(len(features)) if rows is None else np.asarray(rows, dtype=np.int64)
    if reference is not None:
        return cosine_top_k(features[rows], reference, k)
    return cosine_top_k(features[rows], features, k, exclude=rows)


def choose_queries(labels: np.ndarray, max_classes: int, seed: int) -> np.ndarray:
    """Row numbers of the grid's query images: one seeded image per class, of at most
    `max_classes` seeded classes, in class order (int64 (q,))."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if len(classes) > max_classes:
        classes = np.sort(rng.choice(classes, size=max_classes, replace=False))
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes], dtype=np.int64)
