"""Seeded N-per-class subsets of train/: counts, determinism, draws, errors, listings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tempo_cli.data.label_subsets import (
    draw_label_subset,
    draw_label_subsets,
    subset_generator,
    subset_listing,
)
from tempo_cli.data.labelled import list_split
from tempo_cli.errors import UsageError
from tempo_cli.evaluate.linear_probe import run_generator

NAMES = ["A", "B", "C", "D"]


def _labels(counts: dict[int, int]) -> torch.Tensor:
    """int64 (N,): class k repeated counts[k] times, classes interleaved (not sorted)."""
    labels = [k for k, n in counts.items() for _ in range(n)]
    return torch.tensor(labels, dtype=torch.int64)[torch.randperm(len(labels))]


def test_per_class_counts_sorted_unique() -> None:
    torch.manual_seed(0)
    labels = _labels({0: 7, 1: 5, 3: 9})  # class C (2) absent: not drawn, not an error
    idx = draw_label_subset(labels, 4, seed=0, draw=0, class_names=NAMES)
    assert idx.dtype == torch.int64 and idx.shape == (4 * 3,)
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == len(idx)
    assert torch.bincount(labels[idx], minlength=4).tolist() == [4, 4, 0, 4]
    # All of a class when per_class equals its count.
    full = draw_label_subset(labels, 5, seed=0, draw=0, class_names=NAMES)
    assert set((labels == 1).nonzero().flatten().tolist()) <= set(full.tolist())


def test_same_key_same_subset_other_draw_other_subset() -> None:
    torch.manual_seed(1)
    labels = _labels({0: 30, 1: 30, 2: 30, 3: 30})
    a = draw_label_subset(labels, 5, seed=3, draw=0, class_names=NAMES)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, draw_label_subset(labels, 5, seed=3, draw=0, class_names=NAMES))
    draws = draw_label_subsets(labels, 5, seed=3, draws=4, class_names=NAMES)
    assert torch.equal(draws[0], a)
    assert len({tuple(d.tolist()) for d in draws}) == 4
    assert not torch.equal(a, draw_label_subset(labels, 5, seed=4, draw=0, class_names=NAMES))


def test_generator_never_the_probe_runs() -> None:
    probe = {run_generator(s, r).initial_seed() for s in range(5) for r in range(20)}
    keys = [(s, n, d) for s in range(5) for n in (1, 5) for d in range(20)]
    ours = {subset_generator(*key).initial_seed() for key in keys}
    assert len(ours) == 5 * 2 * 20 and not probe & ours


def test_short_classes_are_named() -> None:
    labels = _labels({0: 6, 1: 3, 2: 2, 3: 8})
    with pytest.raises(UsageError) as e:
        draw_label_subset(labels, 4, seed=0, draw=0, class_names=NAMES)
    assert e.value.option == "--samples-pc" and e.value.value == 4
    assert (
        e.value.allowed == "at most 2 per class: classes with fewer images in train/: B (3), C (2)"
    )
    with pytest.raises(UsageError, match="positive"):
        draw_label_subset(labels, 0, seed=0, draw=0, class_names=NAMES)


def test_listing_on_a_real_split(demo_root: Path) -> None:
    files = list_split(demo_root, "train")
    subsets = draw_label_subsets(files.labels, 2, 0, 2, files.class_names)
    listing = subset_listing(files.paths, files.root, subsets)
    assert [len(x) for x in listing] == [2 * 24, 2 * 24]
    assert all(name.startswith("train/") and (demo_root / name).is_file() for name in listing[0])
    # The folder of each listed file is its label.
    assert [n.split("/")[1] for n in listing[1]] == [
        files.class_names[k] for k in files.labels[subsets[1]].tolist()
    ]
