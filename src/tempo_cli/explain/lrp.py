"""`tempo explain lrp`: a heatmap PNG per image and model, and a contact sheet per class.

Output folder (`--out`, default `runs/<name>/`):
- `heatmaps/<LETTER>_<model>_<index>.png`: LETTER = the image's class (its folder),
  model = the checkpoint's name, index = the image's position in the split (sorted by
  class, then file name); S x S (`--image-size`; auto: the size the checkpoint records,
  else 128), colours `--cmap` (default: the study's zennit map, explain/colours.py).
- `sheets/<LETTER>.png`: every image of the class with the models' heatmaps beside it, in
  a grid that fits a screen.
- `--images DIR` (unlabelled): `heatmaps/<ID>_<model>_<index>.png` (ID = file name without
  extension, index = position in name order), `sheets/images_<k>.png` of
  `SHEET_IMAGES` images each, no accuracy.
- `config.json`, `metrics.json` (`heatmaps`: PNGs written, `out`: the heatmap folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tempo_cli.explain import figures
from tempo_cli.explain.heatmap_cache import cached_heatmaps
from tempo_cli.explain.inputs import ExplainInputs, load_inputs
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainLrpSettings

#: images per contact sheet of an unlabelled folder (a class of the ASL splits has <= 20)
SHEET_IMAGES = 20


def heatmap_name(label: str, model: str, index: int) -> str:
    """`<LETTER>_<model>_<index>.png` (SPEC.md)."""
    return f"{label}_{model}_{index}.png"


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of preds equal to targets (an unknown class, -1, is always wrong)."""
    if preds.numel() == 0:
        return float("nan")
    return float((preds == targets).float().mean())


def _sheet_groups(inputs: ExplainInputs) -> list[tuple[str, str, list[int]]]:
    """(file stem, title, image indices) of each contact sheet: one per class, or
    (unlabelled) one per `SHEET_IMAGES` images in name order."""
    if inputs.labelled:
        labels = inputs.images.label_names
        return [
            (cls, f"class {cls}", [i for i, lab in enumerate(labels) if lab == cls])
            for cls in inputs.images.present_classes
        ]
    n = len(inputs.images)
    starts = range(0, n, SHEET_IMAGES)
    return [
        (
            f"images_{k + 1}",
            f"{inputs.images.split} {k + 1}/{len(starts)}",
            list(range(s, min(n, s + SHEET_IMAGES))),
        )
        for k, s in enumerate(starts)
    ]


def _sheets(
    inputs: ExplainInputs,
    pixels: torch.Tensor,
    maps: list[torch.Tensor],
    preds: list[list[str]],
    settings: ExplainLrpSettings,
    folder: Path,
) -> int:
    """Contact sheets `folder/<LETTER>.png` (or `images_<k>.png`); returns how many.

    pixels: [0, 1] (N, 3, S, S); maps: per model (N, S, S); preds: per model N class names.
    """
    groups = _sheet_groups(inputs)
    for stem, title, idx in groups:
        sheet = figures.contact_sheet(
            f"{title} ({settings.method})",
            pixels[idx],
            [m[idx] for m in maps],
            [m.name for m in inputs.models],
            [[p[i] for i in idx] for p in preds],
            cmap=settings.cmap,
            captions=None if inputs.labelled else [inputs.tags[i] for i in idx],
        )
        figures.save_image(sheet, folder / f"{stem}.png")
    return len(groups)


def run(settings: ExplainLrpSettings) -> dict[str, Any]:
    """Compute and write the heatmaps; returns the metrics written to metrics.json."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    inputs = load_inputs(settings, settings.images)
    images, models = inputs.images, inputs.models
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)
    heat_dir = run_dir.path / "heatmaps"
    sheet_dir = run_dir.path / "sheets"
    heat_dir.mkdir(parents=True, exist_ok=True)

    n, tags, pixels = len(images), inputs.tags, images.pixels()
    all_maps: list[torch.Tensor] = []
    all_preds: list[list[str]] = []
    records = []
    with ProgressBar(n * len(models), f"{settings.method} heatmaps", settings.quiet) as bar:
        for model in models:
            model.to(device)
            maps, preds = cached_heatmaps(  # relevance's, when it ran first (or computed)
                model,
                pixels,
                settings.method,
                settings.batch_size,
                device,
                on_batch=lambda k, name=model.name: bar.advance(k, model=name),
            )
            for i in range(n):
                path = heat_dir / heatmap_name(tags[i], model.name, i)
                figures.save_heatmap_png(path, maps[i], settings.cmap)
            record = {"checkpoint": model.checkpoint, "name": model.name}
            text = f"{model.name}: {n} heatmaps"
            if inputs.labelled:
                record["accuracy"] = accuracy(preds, inputs.targets(model))
                text += f", accuracy {record['accuracy']:.3f}"
            records.append(record)
            log(text, settings.quiet)
            all_maps.append(maps)
            all_preds.append([model.class_names[int(p)] for p in preds])
            model.to(torch.device("cpu"))

    sheets = 0
    if settings.sheets:
        sheets = _sheets(inputs, pixels, all_maps, all_preds, settings, sheet_dir)
    written = n * len(models)
    metrics = {
        "heatmaps": written,
        "out": str(heat_dir),
        "sheets": sheets,
        "sheets_dir": str(sheet_dir) if sheets else None,
        "method": settings.method,
        "cmap": settings.cmap,
        "labelled": inputs.labelled,
        "split": images.split if inputs.labelled else None,
        "images_dir": None if inputs.labelled else str(images.root),
        "images": n,
        "image_size": inputs.image_size,
        "models": records,
    }
    run_dir.update_metrics(**metrics)
    run_dir.close()
    log(f"wrote {written} heatmaps to {heat_dir}", settings.quiet)
    return metrics
