"""Labelled still images: splits `train`, `train-N` (N per class), `test` (SPEC.md layout).

`<root>/<split>/<CLASS>/<image>`. Class index: position in ASL_LETTERS when every class
folder is an ASL letter (so `train-1` and `test` share one index even if a split lacks a
letter), otherwise the sorted union of class-folder names over all splits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tempo_cli.data import ASL_LETTERS
from tempo_cli.data.frames import iter_image_chunks, list_images
from tempo_cli.data.transforms import normalize_uint8
from tempo_cli.errors import TempoError, UsageError

_SPLIT_RE = re.compile(r"^(train|test|val|train-\d+)$")


def split_name(samples_pc: int | None) -> str:
    """`--samples-pc N` -> "train-N"; None (absent) -> "train"."""
    return "train" if samples_pc is None else f"train-{int(samples_pc)}"


def _split_order(name: str) -> tuple[int, int, str]:
    # train, train-1, train-5, ..., train-20, val, test: numeric order for train-N.
    if name == "train":
        return (0, 0, name)
    if name.startswith("train-"):
        return (1, int(name[6:]), name)
    return (2 if name == "val" else 3, 0, name)


def available_splits(root: str | Path) -> list[str]:
    """Split folders under root (train, train-N, val, test), in that order."""
    root = Path(root)
    if not root.is_dir():
        raise TempoError(
            f"dataset folder not found: {root}; check --data (or run `tempo download`)"
        )
    names = [p.name for p in root.iterdir() if p.is_dir() and _SPLIT_RE.match(p.name)]
    return sorted(names, key=_split_order)


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(
        (p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def class_names(root: str | Path) -> list[str]:
    """Class list of a dataset (index = position): ASL letters if they fit, else sorted names."""
    found: set[str] = set()
    for split in available_splits(root):
        found.update(p.name for p in _class_dirs(Path(root) / split))
    if found and found <= set(ASL_LETTERS):
        return list(ASL_LETTERS)
    return sorted(found)


@dataclass
class LabelledSplit:
    """One split in memory.

    images: uint8 (N, 3, S, S); labels: int64 (N,) indices into class_names;
    paths: the N source files, in the same order (class folder, then file name).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _unknown_split(root: Path, split: str, splits: list[str]) -> UsageError:
    if split.startswith("train-") and split[6:].isdigit():
        counts = [s[6:] for s in splits if s.startswith("train-")]
        allowed = f"available: {', '.join(counts) or 'none'} (or no --samples-pc for train)"
        allowed += f"; splits in {root}: {', '.join(splits) or 'none'}"
        return UsageError("--samples-pc", int(split[6:]), allowed)
    return UsageError("--split", split, f"available in {root}: {', '.join(splits) or 'none'}")


def load_split(
    root: str | Path, split: str, image_size: int | None, quiet: bool = True
) -> LabelledSplit:
    """Decode `<root>/<split>/<CLASS>/*` -> LabelledSplit (uint8, resized + center-cropped).

    image_size None keeps the native size (all images must then share it).
    Unknown split -> UsageError naming the available ones; empty split or a corrupt image
    -> TempoError naming the folder or file.
    """
    root = Path(root)
    splits = available_splits(root)
    if split not in splits:
        raise _unknown_split(root, split, splits)
    names = class_names(root)
    index = {c: k for k, c in enumerate(names)}
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in _class_dirs(root / split):
        files = list_images(class_dir)
        paths += files
        labels += [index[class_dir.name]] * len(files)
    if not paths:
        raise TempoError(
            f"split {split!r} in {root} holds no images (expected {split}/<CLASS>/<image>.png)"
        )
    from tempo_cli.report.progress import ProgressBar

    with ProgressBar(len(paths), f"loading {split}", quiet=quiet) as bar:
        chunks = list(iter_image_chunks(paths, image_size, on_chunk=bar.advance))
    shapes = {tuple(c.shape[1:]) for c in chunks}
    if len(shapes) > 1:
        raise TempoError(
            f"images in {root / split} have different sizes {sorted(shapes)}; "
            "pass --image-size to resize them to one size"
        )
    return LabelledSplit(torch.cat(chunks), torch.tensor(labels, dtype=torch.int64), names, paths)


class LabelledImages(Dataset):
    """torch Dataset over a LabelledSplit: item k -> (float32 (3, S, S) normalised, label int)."""

    def __init__(self, split: LabelledSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return normalize_uint8(self.split.images[k]), int(self.split.labels[k])
