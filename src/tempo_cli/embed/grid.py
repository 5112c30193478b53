"""The nearest-neighbour grids: the same seeded query images (one per class, up to
`--queries` classes, from the embedded split) in the same rows for every checkpoint, each
with its `--k` most cosine-similar reference images (train, else the split's others).

`neighbours.json` lists what the figure shows (rows, files, similarities, class and group
agreement), so a reader can check a grid against the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tempo_cli.embed.features import Embedding
from tempo_cli.embed.figures import GRID_THUMB, GridBlock, neighbour_mosaic, neighbours_figure
from tempo_cli.embed.images import ImageSet
from tempo_cli.embed.neighbours import Neighbours, choose_queries, neighbours_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NEIGHBOURS_JSON = "neighbours.json"


@dataclass
class Grid:
    """The queries (rows of the embedded split) and each checkpoint's neighbours of them
    (rows of the reference set), by checkpoint label."""

    queries: np.ndarray
    found: dict[str, Neighbours]


def find_grid(
    embeddings: list[Embedding], images: ImageSet, k: int, classes: int, seed: int
) -> Grid:
    """Choose the queries and find every checkpoint's neighbours of them."""
    queries = choose_queries(images.labels, classes, seed)
    found = {e.label: neighbours_of(e.features, e.reference, k, rows=queries) for e in embeddings}
    return Grid(queries, found)


def _same_group(images: ImageSet, ref: ImageSet, queries: np.ndarray, nn: Neighbours):
    if images.groups is None or ref.groups is None:
        return None
    own = np.array([images.groups[i] for i in queries.tolist()], dtype=object)
    theirs = np.array(ref.groups, dtype=object)[nn.index]
    return theirs == own[:, None]


def grid_record(grid: Grid, images: ImageSet, reference: ImageSet | None) -> dict[str, Any]:
    """What neighbours.json holds."""
    ref = reference or images
    ref_files, files = ref.files, images.files
    out: dict[str, Any] = {
        "neighbours_from": ref.split,
        "leave_one_out": reference is None,
        "queries": [
            {"row": int(i), "file": files[i], "class": images.label_names[i]}
            for i in grid.queries.tolist()
        ],
        "checkpoints": {},
    }
    for label, nn in grid.found.items():
        same_class = ref.labels[nn.index] == images.labels[grid.queries][:, None]
        same_group = _same_group(images, ref, grid.queries, nn)
        out["checkpoints"][label] = [
            {
                "rows": nn.index[r].tolist(),
                "files": [ref_files[j] for j in nn.index[r].tolist()],
                "similarity": [round(float(s), 6) for s in nn.similarity[r]],
                "same_class": same_class[r].tolist(),
                "same_group": None if same_group is None else same_group[r].tolist(),
            }
            for r in range(len(grid.queries))
        ]
    return out


def _thumbs(paths: list) -> dict[Any, np.ndarray]:
    from tempo_cli.data.frames import load_uint8

    return {p: load_uint8(p, GRID_THUMB).permute(1, 2, 0).numpy() for p in dict.fromkeys(paths)}


def grid_figure(
    grid: Grid, images: ImageSet, reference: ImageSet | None, titles: dict[str, str], title: str
) -> Figure:
    """The grids of every checkpoint side by side (`embed/figures.py`)."""
    ref = reference or images
    query_paths = [images.paths[i] for i in grid.queries.tolist()]
    wanted = query_paths + [ref.paths[j] for nn in grid.found.values() for j in nn.index.ravel()]
    thumbs = _thumbs(wanted)
    queries = np.stack([thumbs[p] for p in query_paths])
    blocks = []
    for label, nn in grid.found.items():
        neigh = np.stack([np.stack([thumbs[ref.paths[j]] for j in row]) for row in nn.index])
        same_class = ref.labels[nn.index] == images.labels[grid.queries][:, None]
        same_group = _same_group(images, ref, grid.queries, nn)
        blocks.append(
            GridBlock(
                titles.get(label, label), neighbour_mosaic(queries, neigh, same_class, same_group)
            )
        )
    rows = [images.label_names[i] for i in grid.queries.tolist()]
    k = next(iter(grid.found.values())).index.shape[1]
    return neighbours_figure(blocks, rows, k, title)
