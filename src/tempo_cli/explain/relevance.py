"""`tempo explain relevance`: how much of the relevance falls on the hand (SPEC.md).

Relative relevance of one image: RR = mean(R * M) / mean(R), with R the signed heatmap
(LRP by default) and M the hand mask: the colour mask PNG -> `Resize(S, NEAREST)` ->
grayscale -> tensor -> "fattened" by a 3x3 Gaussian blur and `> 0`, twice. Every blur
sigma > 0 has the same 3x3 support, so the fattening is exactly a 3x3 square dilation of
`gray > 0`, applied twice (implemented as a 3x3 max-pool).

Masks are matched to images by ID (the image file name without extension): Cityscapes
`<ID>_gtFine_color.png` anywhere under `--masks DIR`, else a plain `<ID>.png` in it
(never the photo itself; without `--masks` and `<data>/masks`, only Cityscapes masks). An
image without a mask is skipped and counted (`skipped_no_mask` in metrics.json, a warning
naming the first few); no mask at all is an error.

Output: `relevance.csv` (one row per image and model), `relevance_hist.png`, a rich table,
and metrics.json `models`: [{checkpoint, rr_mean, rr_std, n}] (std with ddof=0).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as F

from tempo_cli import atomic
from tempo_cli.data.labelled import LabelledSplit
from tempo_cli.data.transforms import NEAREST, resize_crop
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.explain import figures
from tempo_cli.explain.heatmap_cache import cached_heatmaps
from tempo_cli.explain.inputs import load_inputs
from tempo_cli.models.classifier import LoadedClassifier
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainRelevanceSettings

COLOR_SUFFIX = "_gtFine_color.png"
# Cityscapes companions that are not colour masks (never taken as plain `<ID>.png` masks).
_NOT_PLAIN = ("_gtFine_", "_leftImg8bit")


def fatten(mask: torch.Tensor, times: int = 2) -> torch.Tensor:
    """`(mask > 0)` dilated by a 3x3 square `times` times: bool of mask's shape (..., H, W).

    Equals the reference's `GaussianBlur(3)` followed by `> 0`, repeated: a 3x3 blur with
    any sigma > 0 has strictly positive weights on the 3x3 neighbourhood, and its reflect
    padding only repeats pixels already inside that neighbourhood.
    """
    shape = mask.shape
    m = (mask > 0).float().reshape(-1, 1, *shape[-2:])
    for _ in range(times):
        m = torch.nn.functional.max_pool2d(m, kernel_size=3, stride=1, padding=1)
    return (m > 0).reshape(shape)


def load_mask(path: Path, size: int) -> torch.Tensor:
    """Colour mask PNG -> bool (S, S): Resize(S, NEAREST), grayscale, fattened twice."""
    try:
        with Image.open(path) as im:
            im.load()
            image = im if im.mode in ("RGB", "L") else im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise TempoError(
            f"cannot read mask {path} ({type(e).__name__}: {e}); replace or delete the file"
        ) from None
    gray = F.to_tensor(resize_crop(image, size, NEAREST).convert("L"))[0]  # (S, S) in [0, 1]
    return fatten(gray)


def relative_relevance(heatmap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RR = mean(R * M) / mean(R) per image, R signed.

    Args:
        heatmap: (N, H, W) or (H, W) relevance.
        mask: same shape, bool or {0, 1}.

    Returns:
        float64 (N,) (or a 0-d tensor); inf/nan where mean(R) is 0.
    """
    r = heatmap.double()
    m = mask.double()
    dims = (-2, -1)
    return (r * m).mean(dim=dims) / r.mean(dim=dims)


def find_masks(
    folder: Path, split: str = "", plain: bool = True, exclude: Iterable[Path] = ()
) -> dict[str, Path]:
    """ID -> mask path under `folder` (Cityscapes colour masks first, then `<ID>.png`).

    When an ID occurs in several places, the one under a folder named like `split`
    (case-insensitive, e.g. `gtFine/Test`) wins, else the first in sorted order.
    `plain=False` accepts only `<ID>_gtFine_color.png`; files in `exclude` (the images
    being explained) are never taken as masks.
    """

    def rank(p: Path) -> tuple[int, str]:
        in_split = any(part.lower() == split.lower() for part in p.relative_to(folder).parts[:-1])
        return (0 if in_split else 1, str(p))

    skip = {p.resolve() for p in exclude}
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob(f"*{COLOR_SUFFIX}"), key=rank):
        found.setdefault(p.name[: -len(COLOR_SUFFIX)], p)
    if plain:
        for p in sorted(folder.rglob("*.png"), key=rank):
            if any(s in p.name for s in _NOT_PLAIN) or p.name.startswith("."):
                continue
            if p.resolve() not in skip:
                found.setdefault(p.stem, p)
    return found


def resolve_masks_dir(masks: str | None, data_root: Path) -> tuple[Path, bool]:
    """`--masks DIR`; absent: `<data>/masks` if it exists, else the data root when it holds
    Cityscapes masks, else the masks `tempo download masks` installed (data dir's
    hand-masks/); TempoError when there are none of these.

    Returns the folder and whether plain `<ID>.png` masks may be taken from it (not when
    falling back to the data root, which holds the photos themselves, nor from the
    downloaded folder, which holds only Cityscapes masks).
    """
    from tempo_cli.data.masks import masks_dir

    if masks is not None:
        p = Path(masks).expanduser()
        if not p.is_dir():
            raise UsageError("--masks", masks, "a folder of hand masks (<ID>_gtFine_color.png)")
        return p, True
    default = data_root / "masks"
    if default.is_dir():
        return default, True
    if next(data_root.rglob(f"*{COLOR_SUFFIX}"), None) is not None:
        return data_root, False
    downloaded = masks_dir()
    if next(downloaded.rglob(f"*{COLOR_SUFFIX}"), None) is not None:
        return downloaded, False
    raise TempoError(
        f"no hand masks: none in {default} or under {data_root}, and none in {downloaded}; "
        "run `tempo download masks` (the reference's masks), or give --masks DIR"
    )


def match_masks(
    images: LabelledSplit, masks_dir: Path, plain: bool = True, quiet: bool = False
) -> tuple[list[int], list[Path], list[str]]:
    """Indices of images with a mask, their mask paths, and the IDs without one."""
    found = find_masks(masks_dir, images.split, plain=plain, exclude=images.paths)
    keep, paths, missing = [], [], []
    for i, image_id in enumerate(images.ids):
        if image_id in found:
            keep.append(i)
            paths.append(found[image_id])
        else:
            missing.append(image_id)
    if not keep:
        raise TempoError(
            f"no hand mask in {masks_dir} matches an image of {images.split} (expected "
            f"<ID>{COLOR_SUFFIX} or <ID>.png, e.g. {images.ids[0]}{COLOR_SUFFIX}); check --masks"
        )
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        log(
            f"warning: {len(missing)} of {len(images)} images have no mask in {masks_dir} "
            f"and are skipped: {shown}",
            quiet,
        )
    return keep, paths, missing


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["index", "id", "label", "model", "checkpoint", "prediction", "rr", "relevance_mean"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _print_table(records: list[dict[str, Any]]) -> None:
    """The RR table on stdout (the command's result, also with --quiet)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Relative relevance in the hand mask")
    for col in ("model", "checkpoint", "RR mean", "RR std", "n"):
        table.add_column(col, justify="right" if col.startswith(("RR", "n")) else "left")
    for r in records:
        table.add_row(
            r["name"], r["checkpoint"], f"{r['rr_mean']:.4f}", f"{r['rr_std']:.4f}", str(r["n"])
        )
    Console().print(table)


def _model_rr(
    model: LoadedClassifier,
    images: LabelledSplit,
    keep: list[int],
    masks: torch.Tensor,
    settings: ExplainRelevanceSettings,
    device: torch.device,
    on_batch: Callable[[int], None],
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """RR (len(keep),) of one model, its CSV rows and its metrics.json record.

    masks: bool (len(keep), S, S), the hand masks of the images `keep`.
    """
    model.to(device)
    maps, preds = cached_heatmaps(  # lrp's, when it ran first on these images (or computed)
        model,
        images.pixels(keep),
        settings.method,
        settings.batch_size,
        device,
        on_batch,
    )
    model.to(torch.device("cpu"))
    rr = relative_relevance(maps, masks).numpy()
    means = maps.double().mean(dim=(1, 2)).numpy()
    ids, labels = images.ids, images.label_names
    rows = [
        {
            "index": i,
            "id": ids[i],
            "label": labels[i],
            "model": model.name,
            "checkpoint": model.checkpoint,
            "prediction": model.class_names[int(preds[j])],
            "rr": f"{rr[j]:.8g}",
            "relevance_mean": f"{means[j]:.8g}",
        }
        for j, i in enumerate(keep)
    ]
    finite = rr[np.isfinite(rr)]
    record = {
        "checkpoint": model.checkpoint,
        "name": model.name,
        "rr_mean": float(finite.mean()) if finite.size else float("nan"),
        "rr_std": float(finite.std()) if finite.size else float("nan"),
        "n": int(finite.size),
        "nonfinite": int(rr.size - finite.size),
    }
    return rr, rows, record


def run(settings: ExplainRelevanceSettings) -> dict[str, Any]:
    """Compute RR for every image with a mask and every model; returns the metrics."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    inputs = load_inputs(settings)
    images, models = inputs.images, inputs.models
    masks_dir, plain = resolve_masks_dir(settings.masks, images.root)
    keep, mask_paths, missing = match_masks(images, masks_dir, plain, settings.quiet)
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)

    masks = torch.stack([load_mask(p, inputs.image_size) for p in mask_paths])
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    values: dict[str, np.ndarray] = {}
    with ProgressBar(len(keep) * len(models), "relevance", settings.quiet) as bar:
        for model in models:
            advance = partial(bar.advance, model=model.name)
            rr, model_rows, record = _model_rr(
                model, images, keep, masks, settings, device, advance
            )
            rows += model_rows
            records.append(record)
            values[model.name] = rr
            log(
                f"{model.name}: RR {record['rr_mean']:.4f} ± {record['rr_std']:.4f} "
                f"over {record['n']} images",
                settings.quiet,
            )

    csv_path = run_dir.path / "relevance.csv"
    atomic.write_text(csv_path, _csv_text(rows))
    hist_path = figures.save_figure(
        figures.rr_histogram(values, f"Relative relevance ({settings.method}, {images.split})"),
        run_dir.path / "relevance_hist.png",
    )
    metrics = {
        "models": records,
        "method": settings.method,
        "split": images.split,
        "masks": str(masks_dir),
        "images": len(images),
        "skipped_no_mask": len(missing),
        "missing_mask_ids": missing[:50],
        "csv": str(csv_path),
        "histogram": str(hist_path),
    }
    run_dir.update_metrics(**metrics)
    run_dir.close()
    _print_table(records)
    return metrics
