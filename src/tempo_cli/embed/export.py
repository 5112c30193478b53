"""The files `tempo embed` leaves for other tools: one `.npz` per checkpoint and one CSV of
the images' metadata (the same rows, in the same order).

The `.npz` holds only numeric and fixed-width unicode arrays, so
`numpy.load(path, allow_pickle=False)` reads it:

- `features` float32 (N, d): row i = image i; `labels` int64 (N,): class index;
- `class_names` (C,): index -> name; `files` (N,): paths relative to `root` (0-d);
- `split`, `checkpoint` (0-d): what was embedded and with what `--path`;
- `groups` (N,): the image's group, only where the data says;
- `map` float32 (n, 2) and `map_index` int64 (n,): the 2-D map's points and the rows
  they are (a seeded subsample when the split is larger than `--map-points`), with `--map`.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from tempo_cli import atomic
from tempo_cli.embed.features import Embedding
from tempo_cli.embed.images import ImageSet

METADATA_CSV = "metadata.csv"


def file_stem(label: str) -> str:
    """A checkpoint label as a file name: anything but letters, digits, `.-_` -> `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label).strip(".") or "checkpoint"


def npz_arrays(
    images: ImageSet,
    emb: Embedding,
    map_xy: np.ndarray | None = None,
    map_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of one checkpoint's `.npz` (module docstring)."""
    arrays: dict[str, np.ndarray] = {
        "features": np.ascontiguousarray(emb.features, dtype=np.float32),
        "labels": images.labels.astype(np.int64),
        "class_names": np.array(images.class_names, dtype=np.str_),
        "files": np.array(images.files, dtype=np.str_),
        "root": np.array(str(images.root), dtype=np.str_),
        "split": np.array(images.split, dtype=np.str_),
        "checkpoint": np.array(emb.spec, dtype=np.str_),
    }
    if images.groups is not None:
        arrays["groups"] = np.array(images.groups, dtype=np.str_)
    if map_xy is not None and map_index is not None:
        arrays["map"] = map_xy.astype(np.float32)
        arrays["map_index"] = map_index.astype(np.int64)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """`np.savez` to a temporary name beside `path`, then renamed (atomic)."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        # numpy's stubs type **kwds like savez's own allow_pickle: bool, so a dict of
        # arrays reads as a possible bool to the checker; at run time they are arrays.
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def write_metadata_csv(path: Path, images: ImageSet) -> Path:
    """One row per image, in the `.npz` row order: index, file, class, label, split and
    group where known."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["index", "file", "class", "label", "split"]
    if images.groups is not None:
        header.append("group")
    writer.writerow(header)
    rows = zip(images.files, images.label_names, images.labels.tolist(), strict=True)
    for i, (file, name, label) in enumerate(rows):
        row = [i, file, name, label, images.split]
        if images.groups is not None:
            row.append(images.groups[i])
        writer.writerow(row)
    atomic.write_text(path, buf.getvalue())
    return path
