"""`tempo embed`: every checkpoint's features of one labelled split, written out and looked
at.

Writes `runs/<name>/`: config.json; `<checkpoint>.npz` per `--path` and `metadata.csv`
(`embed/export.py`); metrics.json (`embeddings`: one record per checkpoint with the numbers
of `embed/scores.py`; `map` with `--map`); with `--map`, `map.png` (one t-SNE panel per
checkpoint) and the map's points in each `.npz`; with `--neighbours`, `neighbours.png` and
`neighbours.json`; with `--projector`, `projector/` (`embed/projector.py`). Prints a table
of the numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tempo_cli.embed import grid as grids
from tempo_cli.embed import maps
from tempo_cli.embed.export import (
    METADATA_CSV,
    file_stem,
    npz_arrays,
    write_metadata_csv,
    write_npz,
)
from tempo_cli.embed.features import Embedding, check_bn_stats, embed_checkpoint
from tempo_cli.embed.images import ImageSet, image_set, reference_set
from tempo_cli.embed.neighbours import neighbours_of
from tempo_cli.embed.scores import class_agreement, same_group_share, silhouette_cosine
from tempo_cli.errors import Interrupted
from tempo_cli.report.progress import log
from tempo_cli.settings.embed import EmbedSettings

MAP_FIGURE = "map.png"
NEIGHBOURS_FIGURE = "neighbours.png"


def score(emb: Embedding, images: ImageSet, reference: ImageSet | None, k: int, seed: int) -> dict:
    """The numbers of one checkpoint over every image of the split."""
    ref = reference or images
    nn = neighbours_of(emb.features, emb.reference, k)
    return {
        "k": int(nn.index.shape[1]),
        "class_agreement": class_agreement(images.labels, ref.labels, nn),
        "same_group_share": same_group_share(images.groups, ref.groups, nn),
        "silhouette_cosine": silhouette_cosine(emb.features, images.labels, seed),
    }


def run_embed(settings: EmbedSettings) -> dict[str, Any]:
    """Embed every `--path`; returns the metrics dict."""
    from tempo_cli.data.labelled_data import open_labelled
    from tempo_cli.evaluate.checkpoints import Checkpoint, unique_labels
    from tempo_cli.report.run_dir import RunDir
    from tempo_cli.runtime import resolve_device

    started = time.perf_counter()
    device = resolve_device(settings.device)
    data = open_labelled(settings.data, settings.split_options())
    images = image_set(data, settings.split)
    reference = reference_set(data, images)
    check_bn_stats(settings, reference)
    checkpoints = [Checkpoint(p, settings.backbone, settings.seed) for p in settings.path]
    unique_labels(checkpoints)

    run = RunDir(settings)
    run.save_config(settings)
    run.update_metrics(**_describe(images, reference, settings), data_split=data.describe())
    try:
        embeddings, records = [], []
        for ck in checkpoints:
            t0 = time.perf_counter()
            emb = embed_checkpoint(ck, settings, data, images, reference, device)
            rec = _record(emb, score(emb, images, reference, settings.k, settings.seed), t0)
            embeddings.append(emb)
            records.append(rec)
            _log_record(rec, settings.quiet)
        mapped = _maps(run, settings, images, embeddings) if settings.map else {}
        for emb, rec in zip(embeddings, records, strict=True):
            xy, rows = mapped.get(emb.label, (None, None))
            write_npz(run.path / rec["file"], npz_arrays(images, emb, xy, rows))
        write_metadata_csv(run.path / METADATA_CSV, images)
        run.update_metrics(embeddings=records)
        figures = [run.path / MAP_FIGURE] if settings.map else []
        if settings.neighbours:
            figures.append(_neighbours(run, settings, images, reference, embeddings, records))
        if settings.projector:
            from tempo_cli.embed.projector import PROJECTOR_DIR, write_projector

            write_projector(run.path / PROJECTOR_DIR, images, embeddings)
            run.update_metrics(projector=PROJECTOR_DIR)
        run.update_metrics(
            figures=[str(p) for p in figures], seconds=round(time.perf_counter() - started, 3)
        )
    except (Interrupted, KeyboardInterrupt):
        run.update_metrics(interrupted=True)
        raise
    finally:
        run.close()
    _print_table(records, settings.k, images.split)
    log(f"results in {run.path}", settings.quiet)
    return run.metrics


def _describe(images: ImageSet, reference: ImageSet | None, settings: EmbedSettings) -> dict:
    return {
        "data": str(images.root),
        "split": images.split,
        "images": len(images),
        "classes": len(np.unique(images.labels)),
        "neighbours_from": (reference or images).split,
        "leave_one_out": reference is None,
        "groups_known": images.groups is not None,
        "metadata": METADATA_CSV,
        "bn_stats": settings.bn_stats,
    }


def _record(emb: Embedding, numbers: dict, t0: float) -> dict[str, Any]:
    return {
        "checkpoint": emb.label,
        "path": emb.spec,
        "file": f"{file_stem(emb.label)}.npz",
        "dim": emb.dim,
        "image_size": emb.image_size,
        "cached": emb.cached,
        **numbers,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _maps(run, settings: EmbedSettings, images: ImageSet, embeddings: list[Embedding]) -> dict:
    """Each checkpoint's map of the same rows; map.png; the `map` metrics record."""
    from tempo_cli.embed.figures import MapPanel, map_figure

    rows = maps.map_rows(len(images), settings.map_points, settings.seed)
    found, panels, seconds = {}, [], []
    for emb in embeddings:
        t0 = time.perf_counter()
        xy = maps.map_points(emb.features, rows)
        seconds.append(round(time.perf_counter() - t0, 3))
        found[emb.label] = (xy, rows)
        panels.append(MapPanel(emb.label, xy, images.labels[rows]))
    what = maps.describe(len(images), rows)
    title = f"{maps.METHOD} of {images.split} features ({what}), coloured by class"
    run.save_figure(map_figure(panels, images.class_names, title), MAP_FIGURE)
    run.update_metrics(
        map={
            "method": maps.METHOD,
            "points": int(len(rows)),
            "of": len(images),
            "perplexity": maps.PERPLEXITY,
            "seconds": seconds,
        }  # fmt: skip
    )
    return found


def _neighbours(run, settings, images, reference, embeddings, records) -> Path:
    """neighbours.json and neighbours.png (every checkpoint's block, side by side)."""
    found = grids.find_grid(embeddings, images, settings.k, settings.queries, settings.seed)
    record = grids.grid_record(found, images, reference)
    run.write_json(grids.NEIGHBOURS_JSON, record)
    blocks = {
        f"{r['checkpoint']} (agreement @{r['k']} {r['class_agreement']:.2f})": {
            "record": record,
            "checkpoint": r["checkpoint"],
        }
        for r in records
    }
    fig = grids.grid_figure(blocks, images.root, grids.grid_title(record, settings.k))
    return run.save_figure(fig, NEIGHBOURS_FIGURE)


def _log_record(rec: dict, quiet: bool) -> None:
    group = rec["same_group_share"]
    group_text = "" if group is None else f", same group {group:.3f}"
    log(
        f"embed {rec['checkpoint']}: {rec['dim']}-d, class agreement @{rec['k']} "
        f"{rec['class_agreement']:.3f}{group_text}, silhouette {rec['silhouette_cosine']:.3f}"
        f" ({'cached' if rec['cached'] else 'computed'}, {rec['seconds']:.1f} s)",
        quiet,
    )


def _print_table(records: list[dict], k: int, split: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"what the features learned ({split} split)")
    table.add_column("checkpoint")
    table.add_column(f"class agreement @{k}", justify="right")
    table.add_column("same-group share", justify="right")
    table.add_column("silhouette (cosine)", justify="right")
    for r in records:
        group = "n/a" if r["same_group_share"] is None else f"{r['same_group_share']:.3f}"
        table.add_row(
            r["checkpoint"], f"{r['class_agreement']:.3f}", group, f"{r['silhouette_cosine']:.3f}"
        )
    Console(soft_wrap=True).print(table)
