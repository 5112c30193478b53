"""Which images are embedded: one split of the labelled data, and where neighbours come from.

The listing is the labelled loader's (`data.labelled_data.LabelledData.files`: split
folders, a class-folder tree or a manifest), the one `tempo eval`'s features are made from,
so row i of every feature matrix is file i here. Groups (a tree's sub-folders, a manifest's
group column, `--group-by`) come from the same loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tempo_cli.data.labelled_data import LabelledData

#: The split neighbours are looked up in when the data has one.
REFERENCE_SPLIT = "train"


@dataclass
class ImageSet:
    """The images of one split.

    root: the folder file names are relative to (the dataset root, or a manifest's
    folder); split: the split's name; paths: the N files; labels: int64 (N,) indices into
    class_names; groups: the N images' group (video, session, person; "" for an image of
    no group) where the data has groups, else None.
    """

    root: Path
    split: str
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def files(self) -> list[str]:
        """The files relative to the root, with forward slashes (`test/A/img.png`)."""
        out = []
        for p in self.paths:
            try:
                out.append(p.relative_to(self.root).as_posix())
            except ValueError:  # a file outside the root (a manifest may point anywhere)
                out.append(p.as_posix())
        return out

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[k] for k in self.labels.tolist()]


def image_set(data: LabelledData, split: str, option: str = "--split") -> ImageSet:
    """The files of one split (UsageError naming `option` for an unknown split)."""
    files = data.files(split, option)
    groups = None
    if data.grouped:
        by_path = {e.path: e.group or "" for e in data.entries()}
        groups = [by_path[p] for p in files.paths]
    return ImageSet(
        root=Path(files.root),
        split=files.split,
        paths=list(files.paths),
        labels=files.labels.numpy().astype(np.int64),
        class_names=list(files.class_names),
        groups=groups,
    )


def reference_set(data: LabelledData, embedded: ImageSet) -> ImageSet | None:
    """The images neighbours are looked up in: the train split, or None when the data has
    none or `embedded` is it (then each image's neighbours are the others of its split)."""
    if embedded.split == REFERENCE_SPLIT or REFERENCE_SPLIT not in data.splits():
        return None
    return image_set(data, REFERENCE_SPLIT)
