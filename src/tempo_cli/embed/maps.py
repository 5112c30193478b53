"""The 2-D map of one checkpoint's features: exact t-SNE (`embed/tsne.py`) of the
L2-normalised features (so that map distances follow cosine similarity, as the neighbours
and scores do), on a seeded subsample when the split has more than `--map-points` images.
Every checkpoint maps the same rows. docs/embed.md says why t-SNE and not UMAP.
"""

from __future__ import annotations

import numpy as np

from tempo_cli.embed.neighbours import normalise
from tempo_cli.embed.tsne import PERPLEXITY, tsne

METHOD = "t-SNE"


def map_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    """The rows a map shows: all n, else a seeded sample of max_points, sorted (int64)."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False)).astype(np.int64)


def map_points(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 (len(rows), 2): the map of features[rows] (features (n, d))."""
    return tsne(normalise(np.asarray(features, dtype=np.float64)[rows]), perplexity=PERPLEXITY)


def describe(n: int, rows: np.ndarray) -> str:
    """The figure's words for which images it shows."""
    if len(rows) == n:
        return f"all {n} images"
    return f"a seeded sample of {len(rows)} of {n} images"
