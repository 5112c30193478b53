"""Seeded N-per-class subsets of a labelled split (`--samples-pc N` drawn from `train/`).

The fixed `train-N` folders hold one subset per N; a drawn subset is another sample of the
same size, so results can be averaged over label draws as well as over probe runs. Draw `d`
of `(seed, N)` is always the same images (`draw_label_subset`), and `subset_listing` names
them for the run folder, so a result can be traced to the exact labelled images it used.

Labels and class names come from `data.labelled` (`SplitFiles.labels`, `.class_names`):
this module only chooses indices into them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from tempo_cli.errors import UsageError


def subset_generator(seed: int, per_class: int, draw: int) -> torch.Generator:
    """The CPU generator of draw `draw` of `per_class` images per class under `seed`.

    Seeded by a hash of a tagged string, not by arithmetic on the numbers: the probe's
    `run_generator(seed, run)` uses `seed * 1_000_003 + run`, and a mixing of the same kind
    could hand a label draw the very stream of some probe run (correlated randomness).
    """
    key = f"tempo.label_subset:{int(seed)}:{int(per_class)}:{int(draw)}".encode()
    value = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % (2**63 - 1)
    g = torch.Generator()
    g.manual_seed(value)
    return g


def _check_counts(counts: Tensor, per_class: int, class_names: Sequence[str], split: str) -> None:
    """UsageError naming every present class with fewer than `per_class` images.

    counts: int64 (C,), images per class index (0 = class absent from the split).
    """
    if per_class < 1:
        raise UsageError("--samples-pc", per_class, "a positive number of images per class")
    present = counts > 0
    short = (present & (counts < per_class)).nonzero().flatten().tolist()
    if short:
        most = int(counts[present].min())
        listed = ", ".join(f"{class_names[k]} ({int(counts[k])})" for k in short)
        raise UsageError(
            "--samples-pc",
            per_class,
            f"at most {most} per class: classes with fewer images in {split}/: {listed}",
        )


def draw_label_subset(
    labels: Tensor,
    per_class: int,
    seed: int,
    draw: int,
    class_names: Sequence[str],
    split: str = "train",
) -> Tensor:
    """`per_class` images of each class present in `labels`, drawn without replacement.

    Args:
        labels: int64 (N,), indices into `class_names` (e.g. `SplitFiles.labels`).
        per_class: images per class, >= 1.
        seed, draw: with `per_class`, seed the draw (`subset_generator`): the same triple
            gives the same subset; another draw gives (almost surely) another one.
        class_names: the class list, for the error message.
        split: the split's folder name, for the error message.

    Returns:
        LongTensor (per_class * K,): sorted indices into `labels`, K = classes present.

    Raises:
        UsageError("--samples-pc", ...) naming each present class with fewer images.
    """
    labels = labels.to("cpu", torch.int64)
    counts = torch.bincount(labels, minlength=len(class_names))
    _check_counts(counts, per_class, class_names, split)
    g = subset_generator(seed, per_class, draw)
    chosen: list[Tensor] = []
    # Classes in index order, one permutation each: the draw of a class depends only on
    # the generator's position, never on which other classes exist after it.
    for k in counts.nonzero().flatten().tolist():
        members = (labels == k).nonzero().flatten()  # (count_k,) ascending
        chosen.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    if not chosen:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(chosen).sort().values


def draw_label_subsets(
    labels: Tensor,
    per_class: int,
    seed: int,
    draws: int,
    class_names: Sequence[str],
    split: str = "train",
) -> list[Tensor]:
    """Draws 0 .. draws-1 of `draw_label_subset` (each LongTensor (per_class * K,))."""
    return [draw_label_subset(labels, per_class, seed, d, class_names, split) for d in range(draws)]


def subset_listing(paths: Sequence[Path], root: Path, subsets: Sequence[Tensor]) -> list[list[str]]:
    """The files of each subset, as POSIX paths relative to `root` (for the run folder).

    paths: the N files the subsets index (e.g. `SplitFiles.paths`); subsets: LongTensors of
    indices into them. A file outside `root` is listed by its full path.
    """
    root = Path(root)

    def name(p: Path) -> str:
        p = Path(p)
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix()

    return [[name(paths[i]) for i in subset.tolist()] for subset in subsets]
