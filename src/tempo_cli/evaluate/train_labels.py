"""Which labelled images an evaluation trains on, and the split it selects on.

`--samples-pc N` means the folder `train-N/` where the data root has it (the reference's
layout, used as it is). On a root without it, N images per class are drawn from `train/`
with a seeded generator (`data.label_subsets`): the same subset for the same `--seed`
whatever the checkpoint, so every arm of a comparison trains on the same images.
The data may be in any form of `data.labelled_data` (split folders, a class-folder tree, a
manifest); a made split's `train` is drawn from like a `train/` folder.
`--resample-labels` draws a new subset for every run (even where `train-N/` exists), so the
± over runs covers which images were labelled, not only the heads' initialisation.

Selection (the run whose head `--save-model` keeps, the best lr of a grid) is made on the
`val/` split when the root has one and on `test/` otherwise (`selection_split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tempo_cli.data.label_subsets import draw_label_subset, subset_listing
from tempo_cli.data.labelled import available_splits, list_split, split_name
from tempo_cli.data.labelled_data import LabelledData
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.evaluate.features import TEST_SPLIT

#: Labelled data: any of its forms (`data.labelled_data`), or a path opened with defaults.
DataRoot = Path | LabelledData
#: The split choices are made on, when the data root has it.
VAL_SPLIT = "val"
FULL_SPLIT = "train"


def selection_split(root: DataRoot) -> str | None:
    """`val` when `root` has a labelled val split, else None (choose on test)."""
    return VAL_SPLIT if VAL_SPLIT in available_splits(root) else None


@dataclass(frozen=True)
class TrainingLabels:
    """The labelled training images of one samples-per-class value.

    split: the folder the images come from (`train-N`, or `train`).
    samples_pc: N, None = the full train split.
    subsets: None = the whole split for every run; else LongTensors (N*K,) of indices into
        the split's files (`data.labelled.list_split` order), one shared by all runs or,
        with `resampled`, one per run.
    seed: the seed the subsets were drawn with.
    """

    split: str
    samples_pc: int | None
    subsets: tuple[torch.Tensor, ...] | None = None
    resampled: bool = False
    seed: int = 0

    @property
    def drawn(self) -> bool:
        return self.subsets is not None

    def for_run(self, run: int) -> torch.Tensor | None:
        """Indices into the split's files of run `run` (None: the whole split)."""
        if self.subsets is None:
            return None
        return self.subsets[run] if self.resampled else self.subsets[0]

    def run_subsets(self, runs: int, first: int = 0) -> list[torch.Tensor] | None:
        """`for_run` of runs first .. first + runs - 1 (None: the whole split)."""
        if self.subsets is None:
            return None
        subsets = self.subsets
        return [subsets[r] if self.resampled else subsets[0] for r in range(first, first + runs)]

    def describe(self) -> dict[str, Any]:
        """metrics.json keys: where the labels came from."""
        if not self.drawn:
            return {"labels": self.split}
        how = "resampled per run" if self.resampled else "one draw"
        return {"labels": f"{self.samples_pc} per class drawn from {self.split} ({how})"}

    def listing(self, root: DataRoot) -> dict[str, Any]:
        """The files of each drawn subset, relative to the data's root (the run folder's list)."""
        assert self.subsets is not None
        files = list_split(root, self.split)
        return {
            "split": self.split,
            "samples_pc": self.samples_pc,
            "seed": self.seed,
            "resampled": self.resampled,
            "subsets": subset_listing(files.paths, files.root, self.subsets),
        }


def resolve_training_labels(
    root: DataRoot, samples_pc: int | None, *, seed: int, runs: int = 1, resample: bool = False
) -> TrainingLabels:
    """The training labels of `--samples-pc samples_pc` on `root` (see the module doc).

    UsageError (exit 2) when neither `train-N/` nor `train/` exists, when `train/` has a
    class with fewer than N images, or for `--resample-labels` without `train/`.
    """
    splits = available_splits(root)
    if TEST_SPLIT not in splits:
        raise TempoError(
            f"no test split in {root} (expected {root}/test/<CLASS>/<image>, or a class-folder "
            "tree or manifest that tempo splits: docs/data.md)"
        )
    if samples_pc is None:
        if FULL_SPLIT not in splits:
            raise _missing(root, splits, "full")
        return TrainingLabels(FULL_SPLIT, None)
    folder = split_name(samples_pc)
    if folder in splits and not resample:
        return TrainingLabels(folder, samples_pc)
    if FULL_SPLIT not in splits:
        if resample:
            raise UsageError(
                "--resample-labels", True, f"needs a train/ split to draw from; {root} has none"
            )
        raise _missing(root, splits, samples_pc)
    files = list_split(root, FULL_SPLIT)
    draws = runs if resample else 1
    subsets = tuple(
        draw_label_subset(files.labels, samples_pc, seed, d, files.class_names)
        for d in range(draws)
    )
    return TrainingLabels(FULL_SPLIT, samples_pc, subsets, resample, seed)


def _missing(root: DataRoot, splits: list[str], value: int | str) -> UsageError:
    counts = [s[6:] for s in splits if s.startswith("train-")]
    allowed = f"available: {', '.join(counts) or 'none'}"
    allowed += ", any N drawn from train" if FULL_SPLIT in splits else ""
    allowed += f" (splits in {root}: {', '.join(splits) or 'none'})"
    return UsageError("--samples-pc", value, allowed)
