"""The nearest-neighbour grids: the same seeded query images (one per class, up to
`--queries` classes, from the embedded split) in the same rows for every checkpoint, each
with its `--k` most cosine-similar reference images (train, else the split's others).

`neighbours.json` lists what the figure shows (rows, files, similarities, class and group
agreement), so a reader can check a grid against the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


def _same_group(
    images: ImageSet, ref: ImageSet, queries: np.ndarray, nn: Neighbours
) -> np.ndarray | None:
    """bool (q, k): a neighbour from its query's group (an image of no group, "", has
    none); None when groups are unknown."""
    if images.groups is None or ref.groups is None:
        return None
    own = np.array([images.groups[i] for i in queries.tolist()], dtype=object)
    theirs = np.array(ref.groups, dtype=object)[nn.index]
    return (theirs == own[:, None]) & (own[:, None] != "")


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


def _thumbs(paths: list[Path]) -> dict[Path, np.ndarray]:
    from tempo_cli.data.frames import load_uint8

    return {p: load_uint8(p, GRID_THUMB).permute(1, 2, 0).numpy() for p in dict.fromkeys(paths)}


def grid_figure(records: dict[str, dict[str, Any]], root: Path, title: str) -> Figure:
    """Grids side by side, drawn from `neighbours.json` records alone (so the study can
    compose the arms' runs): records = {block title: {"record": a neighbours.json dict,
    "checkpoint": the label of the block's checkpoint in it}}. Every record must have the
    same queries (same data, split and seed); its files are relative to `root`."""
    first = next(iter(records.values()))["record"]
    queries = first["queries"]
    for entry in records.values():
        if [q["file"] for q in entry["record"]["queries"]] != [q["file"] for q in queries]:
            raise ValueError("neighbour grids of different queries cannot share rows")
    rows = [entry["record"]["checkpoints"][entry["checkpoint"]] for entry in records.values()]
    wanted = [root / q["file"] for q in queries]
    wanted += [root / f for found in rows for row in found for f in row["files"]]
    thumbs = _thumbs(wanted)
    query_imgs = np.stack([thumbs[root / q["file"]] for q in queries])
    blocks = []
    for block_title, found in zip(records, rows, strict=True):
        neigh = np.stack([np.stack([thumbs[root / f] for f in row["files"]]) for row in found])
        same_class = np.array([row["same_class"] for row in found], dtype=bool)
        groups = [row["same_group"] for row in found]
        same_group = None if any(g is None for g in groups) else np.array(groups, dtype=bool)
        mosaic = neighbour_mosaic(query_imgs, neigh, same_class, same_group)
        blocks.append(GridBlock(block_title, mosaic))
    k = len(rows[0][0]["files"]) if rows and rows[0] else 0
    return neighbours_figure(blocks, [q["class"] for q in queries], k, title)


def grid_title(record: dict[str, Any], k: int) -> str:
    """What a grid shows, in words (from its neighbours.json record)."""
    source = record["neighbours_from"]
    if record["leave_one_out"]:
        source += ", leaving the query out"
    title = f"nearest {k} neighbours (cosine) among {source}: green same class, red another"
    if any(
        row["same_group"] is not None for rows in record["checkpoints"].values() for row in rows
    ):
        title += ", yellow mark: same group as the query"
    return title
