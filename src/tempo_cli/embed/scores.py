"""The numbers beside the pictures, over every embedded image (not only the grid's queries).

- class agreement @k: the share of each image's k nearest neighbours (cosine, among train,
  or among the split's other images when there is no train split) that have its class;
  the mean over images. It is a kNN vote without the vote: 1 = every neighbour agrees.
- same-group share @k: the share of those neighbours from the image's own group (video,
  session, person) where groups are known. A high share with a high agreement is the sign
  of a shortcut: the features recognise the recording, not the class.
- silhouette (cosine distance): per image (b - a) / max(a, b), a = its mean cosine distance
  to the other images of its class, b = the smallest mean distance to another class; 0 for
  an image alone in its class (as scikit-learn's `silhouette_score(metric="cosine")`);
  the mean over images, in [-1, 1]: how far apart the classes lie, with no neighbours or
  probe involved.
"""

from __future__ import annotations

import numpy as np

from tempo_cli.embed.neighbours import Neighbours, normalise

#: Above this many images the silhouette is taken on a seeded subsample (O(n^2) time).
SILHOUETTE_MAX = 10_000
_CHUNK = 1024


def class_agreement(labels: np.ndarray, reference_labels: np.ndarray, nn: Neighbours) -> float:
    """Mean share of neighbours with the image's class (labels (n,), nn.index (n, k))."""
    if nn.index.size == 0:
        return float("nan")
    return float((reference_labels[nn.index] == labels[:, None]).mean())


def same_group_share(
    groups: list[str] | None, reference_groups: list[str] | None, nn: Neighbours
) -> float | None:
    """Mean share of neighbours from the image's own group; None when groups are unknown.
    An image of no group ("") shares a group with nobody."""
    if groups is None or reference_groups is None or nn.index.size == 0:
        return None
    own = _group_codes(groups, reference_groups, -1)
    ref = _group_codes(reference_groups, groups, -2)
    return float((ref[nn.index] == own[:, None]).mean())


def _group_codes(groups: list[str], others: list[str], none: int) -> np.ndarray:
    """Integer codes of groups, shared with `others`; "" -> `none` (< 0, never matched:
    the two sides use different values)."""
    names = {g: i for i, g in enumerate(sorted((set(groups) | set(others)) - {""}))}
    return np.array([names[g] if g else none for g in groups], dtype=np.int64)


def silhouette_cosine(
    features: np.ndarray, labels: np.ndarray, seed: int = 0, max_points: int = SILHOUETTE_MAX
) -> float:
    """Mean silhouette on cosine distance (features (n, d), labels (n,)); NaN with fewer
    than two classes. More than `max_points` images: a seeded subsample of them."""
    labels = np.asarray(labels)
    if len(labels) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return float("nan")
    x = normalise(np.asarray(features, dtype=np.float64))
    onehot = np.zeros((len(codes), len(classes)))
    onehot[np.arange(len(codes)), codes] = 1.0
    sums = np.empty_like(onehot)  # (n, C): summed distance of each image to each class
    for lo in range(0, len(x), _CHUNK):
        dist = np.maximum(1.0 - x[lo : lo + _CHUNK] @ x.T, 0.0)
        sums[lo : lo + _CHUNK] = dist @ onehot
    counts = onehot.sum(axis=0)
    own = counts[codes]
    rows = np.arange(len(codes))
    a = sums[rows, codes] / np.maximum(own - 1, 1)
    means = sums / counts[None, :]
    means[rows, codes] = np.inf
    b = means.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    s[own == 1] = 0.0
    return float(s.mean())
