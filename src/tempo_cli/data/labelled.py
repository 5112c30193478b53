"""Labelled still images: splits `train`, `train-N` (N per class), `val`, `test`.

The functions here take a `data.labelled_data.LabelledData` (any of the three forms: split
folders, a class-folder tree, a manifest) or a path, opened with the default split options.
For the split-folder layout `<root>/<split>/<CLASS>/<image>` (SPEC.md), one rule for every
command:

- Split: the folder `<root>/<split>`, else the one whose name differs only in case
  (`Test` for `test`, as in the Cityscapes-style hand-mask data).
- Class folders: the non-hidden sub-folders of the split; an image's label is its folder.
- Class index (`class_index`): position in ASL_LETTERS when every class folder is an ASL
  letter (so `train-1` and `test` share one index even if a split lacks a letter),
  otherwise the sorted names; over all splits of the dataset (`class_names`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from tempo_cli.data import ASL_LETTERS
from tempo_cli.data.frames import iter_image_chunks, list_images
from tempo_cli.data.transforms import BILINEAR, InterpolationMode, normalize
from tempo_cli.errors import TempoError, UsageError

if TYPE_CHECKING:
    from tempo_cli.data.labelled_data import LabelledData

_SPLIT_RE = re.compile(r"^(train|test|val|train-\d+)$")


def split_name(samples_pc: int | None) -> str:
    """`--samples-pc N` -> "train-N"; None (absent) -> "train"."""
    return "train" if samples_pc is None else f"train-{int(samples_pc)}"


def split_order(name: str) -> tuple[int, int, str]:
    # train, train-1, train-5, ..., train-20, val, test: numeric order for train-N.
    if name == "train":
        return (0, 0, name)
    if name.startswith("train-"):
        return (1, int(name[6:]), name)
    return (2 if name == "val" else 3, 0, name)


def available_splits(data: str | Path | LabelledData) -> list[str]:
    """The splits of `data` (train, train-N, val, test), in that order."""
    return open_labelled(data).splits()


def folder_splits(root: str | Path) -> list[str]:
    """Split folders under root (train, train-N, val, test), in that order."""
    root = Path(root)
    if not root.is_dir():
        raise TempoError(
            f"dataset folder not found: {root}; check --data (or run `tempo download`)"
        )
    names = [p.name for p in root.iterdir() if p.is_dir() and _SPLIT_RE.match(p.name)]
    return sorted(names, key=split_order)


def find_split(root: str | Path, split: str) -> Path | None:
    """The folder of `split`: `root/split`, else a folder named like it in another case."""
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name.lower() == split.lower():
                return p
    return None


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(
        (p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def class_index(found: Iterable[str]) -> list[str]:
    """Class folder names -> the class list (index = position): ASL letters if they fit, else
    the sorted names. The one class rule of tempo (heads: `models.classifier`)."""
    found = set(found)
    if found and found <= set(ASL_LETTERS):
        return list(ASL_LETTERS)
    return sorted(found)


def _class_folders(root: Path, also: Path | None = None) -> set[str]:
    dirs = [root / s for s in folder_splits(root)] + ([also] if also else [])
    return {p.name for d in dirs for p in _class_dirs(d)}


def folder_class_names(root: str | Path) -> set[str]:
    """The class folder names of all split folders of a split-layout root."""
    return _class_folders(Path(root))


def class_names(data: str | Path | LabelledData) -> list[str]:
    """Class list of a dataset (index = position): `class_index` of all its classes."""
    return list(open_labelled(data).class_names)


def present_classes(labels: torch.Tensor, names: Sequence[str]) -> list[str]:
    """The classes that have an image in `labels` (int64 (N,)), in index order."""
    return [names[k] for k in sorted(set(labels.tolist()))]


@dataclass
class SplitFiles:
    """The files of one split, not yet decoded.

    labels: int64 (N,) indices into class_names; paths: the N files in the same order
    (class folder, then file name); root: the dataset root; split: the split's folder name.
    """

    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    root: Path
    split: str

    @property
    def present_classes(self) -> list[str]:
        return present_classes(self.labels, self.class_names)


@dataclass
class LabelledSplit:
    """One split in memory.

    images: uint8 (N, 3, S, S); labels: int64 (N,) indices into class_names;
    paths: the N source files, in the same order (class folder, then file name);
    root: the dataset root; split: the split's folder name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    root: Path | None = None
    split: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_names(self) -> list[str]:
        """The class name (folder) of each image, (N,)."""
        return [self.class_names[k] for k in self.labels.tolist()]

    @property
    def present_classes(self) -> list[str]:
        return present_classes(self.labels, self.class_names)

    @property
    def ids(self) -> list[str]:
        """Image IDs = file names without extension (how hand masks are matched)."""
        return [p.stem for p in self.paths]

    def pixels(self, index: slice | torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """float32 (n, 3, S, S) in [0, 1] (ToTensor) of the images at `index` (None = all)."""
        x = self.images if index is None else self.images[index]
        return x.float() / 255.0


def unknown_split(root: Path, split: str, splits: list[str], option: str | None) -> UsageError:
    if option is None and split.startswith("train-") and split[6:].isdigit():
        counts = [s[6:] for s in splits if s.startswith("train-")]
        allowed = f"available: {', '.join(counts) or 'none'} (or no --samples-pc for train)"
        allowed += f"; splits in {root}: {', '.join(splits) or 'none'}"
        return UsageError("--samples-pc", int(split[6:]), allowed)
    return UsageError(
        option or "--split", split, f"available in {root}: {', '.join(splits) or 'none'}"
    )


def list_split(
    data: str | Path | LabelledData, split: str, option: str | None = None
) -> SplitFiles:
    """The files of one split of `data` with their labels (nothing decoded yet).

    Unknown split -> UsageError naming the available ones (for `option`; None: `--split`,
    or `--samples-pc` for a `train-N`).
    """
    return open_labelled(data).files(split, option)


def list_folder_split(root: str | Path, split: str, option: str | None = None) -> SplitFiles:
    """The files of `<root>/<split>/<CLASS>/*` with their labels (nothing decoded yet).

    Unknown split -> UsageError naming the available ones (for `option`; None: `--split`,
    or `--samples-pc` for a `train-N`); empty split -> TempoError naming the folder.
    """
    root = Path(root)
    splits = folder_splits(root)
    folder = find_split(root, split)
    if folder is None:
        raise unknown_split(root, split, splits, option)
    index = {c: k for k, c in enumerate(class_index(_class_folders(root, also=folder)))}
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in _class_dirs(folder):
        files = list_images(class_dir)
        paths += files
        labels += [index[class_dir.name]] * len(files)
    if not paths:
        raise TempoError(
            f"split {split!r} in {root} holds no images (expected {split}/<CLASS>/<image>.png)"
        )
    labels_t = torch.tensor(labels, dtype=torch.int64)
    return SplitFiles(labels_t, list(index), paths, root, folder.name)


def read_split(
    files: SplitFiles,
    image_size: int | None,
    quiet: bool = True,
    interpolation: InterpolationMode = BILINEAR,
) -> LabelledSplit:
    """Decode the files -> LabelledSplit (uint8, resized with `interpolation`, center-cropped).

    image_size None keeps the native size (all images must then share it). A corrupt image
    -> TempoError naming the file.
    """
    from tempo_cli.report.progress import ProgressBar

    with ProgressBar(len(files.paths), f"loading {files.split}", quiet=quiet) as bar:
        chunks = list(
            iter_image_chunks(files.paths, image_size, bar.advance, interpolation=interpolation)
        )
    shapes = {tuple(c.shape[1:]) for c in chunks}
    if len(shapes) > 1:
        raise TempoError(
            f"images in {files.root / files.split} have different sizes {sorted(shapes)}; "
            "pass --image-size to resize them to one size"
        )
    return LabelledSplit(
        torch.cat(chunks), files.labels, files.class_names, files.paths, files.root, files.split
    )


def load_split(
    data: str | Path | LabelledData,
    split: str,
    image_size: int | None,
    quiet: bool = True,
    interpolation: InterpolationMode = BILINEAR,
) -> LabelledSplit:
    """`read_split(list_split(data, split), ...)`: one split in memory."""
    return read_split(list_split(data, split), image_size, quiet, interpolation)


def open_labelled(data: str | Path | LabelledData) -> LabelledData:
    """`data.labelled_data.open_labelled` with the default split options for a path."""
    from tempo_cli.data.labelled_data import open_labelled as open_data

    return open_data(data)


class LabelledImages(Dataset):
    """torch Dataset over a LabelledSplit: item k -> (float32 (3, S, S) normalised, label int)."""

    def __init__(self, split: LabelledSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return normalize(self.split.images[k]), int(self.split.labels[k])
