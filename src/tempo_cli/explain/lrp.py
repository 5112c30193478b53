"""`tempo explain lrp`: a heatmap PNG per image and model, and a contact sheet per class.

Output folder (`--out`, default `runs/<name>/`):
- `heatmaps/<LETTER>_<model>_<index>.png`: LETTER = the image's class (its folder),
  model = the checkpoint's name, index = the image's position in the split (sorted by
  class, then file name); S x S (`--image-size`, default 128), `Reds` colour map.
- `sheets/<LETTER>.png`: every image of the class with the models' heatmaps side by side.
- `config.json`, `metrics.json` (`heatmaps`: PNGs written, `out`: the heatmap folder).
"""

from __future__ import annotations

from typing import Any

import torch

from tempo_cli.explain import figures
from tempo_cli.explain.attribution import heatmaps
from tempo_cli.explain.common import (
    accuracy,
    label_indices,
    load_classifiers,
    load_images,
)
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainLrpSettings


def heatmap_name(label: str, model: str, index: int) -> str:
    """`<LETTER>_<model>_<index>.png` (SPEC.md)."""
    return f"{label}_{model}_{index}.png"


def run(settings: ExplainLrpSettings) -> dict[str, Any]:
    """Compute and write the heatmaps; returns the metrics written to metrics.json."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    images = load_images(settings.data, settings.split, settings.image_size, settings.quiet)
    models = load_classifiers(settings.path, settings.compare, images.class_names, settings.quiet)
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)
    heat_dir = run_dir.path / "heatmaps"
    sheet_dir = run_dir.path / "sheets"
    heat_dir.mkdir(parents=True, exist_ok=True)

    n = len(images)
    pixels = images.pixels()
    all_maps: list[torch.Tensor] = []
    all_preds: list[list[str]] = []
    records = []
    written = 0
    with ProgressBar(n * len(models), f"{settings.method} heatmaps", settings.quiet) as bar:
        for model in models:
            model.to(device)
            maps, preds = heatmaps(
                model.classifier,
                pixels,
                settings.method,
                settings.batch_size,
                device,
                on_batch=lambda k, name=model.name: bar.advance(k, model=name),
            )
            for i in range(n):
                path = heat_dir / heatmap_name(images.labels[i], model.name, i)
                figures.save_heatmap_png(path, maps[i])
                written += 1
            acc = accuracy(preds, label_indices(model, images.labels))
            records.append({"checkpoint": model.checkpoint, "name": model.name, "accuracy": acc})
            log(f"{model.name}: {n} heatmaps, accuracy {acc:.3f}", settings.quiet)
            all_maps.append(maps)
            all_preds.append([model.class_names[int(p)] for p in preds])
            model.to(torch.device("cpu"))

    sheets = 0
    if settings.sheets:
        for cls in images.class_names:
            idx = [i for i, lab in enumerate(images.labels) if lab == cls]
            if not idx:
                continue
            sheet = figures.contact_sheet(
                f"class {cls} ({settings.method})",
                pixels[idx],
                [m[idx] for m in all_maps],
                [m.name for m in models],
                [[p[i] for i in idx] for p in all_preds],
            )
            figures.save_image(sheet, sheet_dir / f"{cls}.png")
            sheets += 1

    metrics = {
        "heatmaps": written,
        "out": str(heat_dir),
        "sheets": sheets,
        "sheets_dir": str(sheet_dir) if sheets else None,
        "method": settings.method,
        "split": images.split,
        "images": n,
        "image_size": settings.image_size,
        "models": records,
    }
    run_dir.update_metrics(**metrics)
    run_dir.close()
    log(f"wrote {written} heatmaps to {heat_dir}", settings.quiet)
    return metrics
