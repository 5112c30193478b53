"""`tempo explain lrp`: a heatmap PNG per image and model, and a contact sheet per class.

Output folder (`--out`, default `runs/<name>/`):
- `heatmaps/<LETTER>_<model>_<index>.png`: LETTER = the image's class (its folder),
  model = the checkpoint's name, index = the image's position in the split (sorted by
  class, then file name); S x S (`--image-size`; auto: the size the checkpoint records,
  else 128), `Reds` colour map.
- `sheets/<LETTER>.png`: every image of the class with the models' heatmaps side by side.
- `config.json`, `metrics.json` (`heatmaps`: PNGs written, `out`: the heatmap folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tempo_cli.explain import figures
from tempo_cli.explain.attribution import heatmaps
from tempo_cli.explain.inputs import ExplainInputs, load_inputs
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainLrpSettings


def heatmap_name(label: str, model: str, index: int) -> str:
    """`<LETTER>_<model>_<index>.png` (SPEC.md)."""
    return f"{label}_{model}_{index}.png"


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of preds equal to targets (an unknown class, -1, is always wrong)."""
    if preds.numel() == 0:
        return float("nan")
    return float((preds == targets).float().mean())


def _sheets(
    inputs: ExplainInputs,
    pixels: torch.Tensor,
    maps: list[torch.Tensor],
    preds: list[list[str]],
    method: str,
    folder: Path,
) -> int:
    """A contact sheet per class, `folder/<LETTER>.png`; returns how many.

    pixels: [0, 1] (N, 3, S, S); maps: per model (N, S, S); preds: per model N class names.
    """
    labels, sheets = inputs.images.label_names, 0
    for cls in inputs.images.present_classes:
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        sheet = figures.contact_sheet(
            f"class {cls} ({method})",
            pixels[idx],
            [m[idx] for m in maps],
            [m.name for m in inputs.models],
            [[p[i] for i in idx] for p in preds],
        )
        figures.save_image(sheet, folder / f"{cls}.png")
        sheets += 1
    return sheets


def run(settings: ExplainLrpSettings) -> dict[str, Any]:
    """Compute and write the heatmaps; returns the metrics written to metrics.json."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    inputs = load_inputs(settings)
    images, models = inputs.images, inputs.models
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)
    heat_dir = run_dir.path / "heatmaps"
    sheet_dir = run_dir.path / "sheets"
    heat_dir.mkdir(parents=True, exist_ok=True)

    n, labels, pixels = len(images), images.label_names, images.pixels()
    all_maps: list[torch.Tensor] = []
    all_preds: list[list[str]] = []
    records = []
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
                figures.save_heatmap_png(heat_dir / heatmap_name(labels[i], model.name, i), maps[i])
            acc = accuracy(preds, model.label_indices(labels))
            records.append({"checkpoint": model.checkpoint, "name": model.name, "accuracy": acc})
            log(f"{model.name}: {n} heatmaps, accuracy {acc:.3f}", settings.quiet)
            all_maps.append(maps)
            all_preds.append([model.class_names[int(p)] for p in preds])
            model.to(torch.device("cpu"))

    sheets = 0
    if settings.sheets:
        sheets = _sheets(inputs, pixels, all_maps, all_preds, settings.method, sheet_dir)
    written = n * len(models)
    metrics = {
        "heatmaps": written,
        "out": str(heat_dir),
        "sheets": sheets,
        "sheets_dir": str(sheet_dir) if sheets else None,
        "method": settings.method,
        "split": images.split,
        "images": n,
        "image_size": inputs.image_size,
        "models": records,
    }
    run_dir.update_metrics(**metrics)
    run_dir.close()
    log(f"wrote {written} heatmaps to {heat_dir}", settings.quiet)
    return metrics
