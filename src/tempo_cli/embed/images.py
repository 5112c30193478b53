"""Which images are embedded: one split of the labelled data, and where neighbours come from.

The listing is the labelled loader's (`data.labelled.list_split`), the same one `tempo
eval`'s features are made from, so row i of every feature matrix is file i here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempo_cli.data.labelled import available_splits, list_split

#: The split neighbours are looked up in when the data has one.
REFERENCE_SPLIT = "train"


@dataclass
class ImageSet:
    """The images of one split.

    root: the dataset root; split: the split's folder name; paths: the N files;
    labels: int64 (N,) indices into class_names; groups: the N images' group (video,
    session, person) where the data says, else None.
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


def image_set(root: Path, split: str, option: str = "--split") -> ImageSet:
    """The files of `<root>/<split>` (UsageError naming `option` for an unknown split)."""
    files = list_split(root, split, option)
    return ImageSet(
        root=Path(root),
        split=files.split,
        paths=list(files.paths),
        labels=files.labels.numpy().astype(np.int64),
        class_names=list(files.class_names),
        groups=None,
    )


def reference_set(root: Path, embedded: ImageSet) -> ImageSet | None:
    """The images neighbours are looked up in: the train split, or None when the data has
    none or `embedded` is it (then each image's neighbours are the others of its split)."""
    if embedded.split == REFERENCE_SPLIT or REFERENCE_SPLIT not in available_splits(root):
        return None
    return image_set(root, REFERENCE_SPLIT)
