"""`tempo explain adversarial`: accuracy and heatmaps under noise (the study) or attacks.

The perturbations (`--attack noise|fgsm|pgd`) are the registered objects of
`explain/attacks.py`. Default levels: the study's noise levels 0, 0.1, ..., 0.5, and L-inf
budgets 0 ... 0.063 in [0, 1] pixel space for the gradient attacks.

Output: `figures/<LETTER>_<index>.png` (the study's figure per image: row 1 the noisy
images "Noise level: x", then per model its heatmaps "Prediction: <LETTER>"; for attacks
each model gets its own row of attacked images), `predictions.csv` (image, model, level,
prediction), `accuracy_<attack>.csv|png`, a rich table, metrics.json `models`:
[{checkpoint, attack, accuracy_by_level: {level: acc}}].

`--images DIR` (a flat folder of unlabelled photos): `figures/<ID>_<index>.png` and
`predictions.csv` only; metrics.json says `labelled: false` and has no accuracy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tempo_cli import atomic
from tempo_cli.data.transforms import normalize
from tempo_cli.explain import figures
from tempo_cli.explain.attacks import ATTACKS, Attack, AttackOptions
from tempo_cli.explain.attribution import attribute, batches
from tempo_cli.explain.inputs import ExplainInputs, load_inputs
from tempo_cli.models.classifier import LoadedClassifier
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainAdversarialSettings


def level_key(level: float) -> str:
    """The metrics.json key of a level: `0`, `0.1`, `0.031`."""
    return f"{level:g}"


@dataclass
class _FigureCell:
    """One model and image of the per-image figure: at each level the perturbed image
    (uint8 (L, 3, H, W)), the heatmap ((L, H, W)) and the predicted class name."""

    images: torch.Tensor
    maps: torch.Tensor
    preds: list[str]


@dataclass
class _Figures:
    """The per-image figures of the first `n` images: (model, image) -> its cell."""

    n: int
    levels: list[float]
    size: tuple[int, ...]  # (3, S, S)
    cells: dict[tuple[int, int], _FigureCell] = field(default_factory=dict)

    def add(
        self, m: int, model: LoadedClassifier, idx: list[int], j: int, xa: torch.Tensor, method: str
    ) -> None:
        """Heatmaps of the batch's figure images (positions `idx`) perturbed at level j."""
        rows = [k for k, i in enumerate(idx) if i < self.n]
        if not rows:
            return
        maps, preds = attribute(model.classifier, normalize(xa[rows]), method)
        shown = (xa[rows].cpu() * 255).round().to(torch.uint8)
        for r, k in enumerate(rows):
            cell = self.cells.get((m, idx[k]))
            if cell is None:
                n_levels = len(self.levels)
                cell = _FigureCell(
                    images=torch.zeros(n_levels, *self.size, dtype=torch.uint8),
                    maps=torch.zeros(n_levels, *self.size[1:]),
                    preds=[""] * n_levels,
                )
                self.cells[(m, idx[k])] = cell
            cell.maps[j] = maps[r]
            cell.preds[j] = model.class_names[int(preds[r])]
            cell.images[j] = shown[r]

    def write(
        self,
        folder: Path,
        names: list[str],
        tags: list[str],
        attack: Attack,
        settings: ExplainAdversarialSettings,
    ) -> None:
        """`folder/<LETTER or ID>_<index>.png` for each figure image."""
        n_image_rows = len(names) if attack.per_model_images else 1  # noise: one row
        with ProgressBar(self.n, "figures", settings.quiet) as bar:
            for i in range(self.n):
                fig = figures.level_figure(
                    self.levels,
                    [self.cells[(k, i)].images.float() / 255.0 for k in range(n_image_rows)],
                    [self.cells[(m, i)].maps for m in range(len(names))],
                    [self.cells[(m, i)].preds for m in range(len(names))],
                    names,
                    attack.figure_label,
                    attack.per_model_images,
                    settings.cmap,
                )
                figures.save_figure(fig, folder / f"{tags[i]}_{i}.png")
                bar.advance(1)


def _predictions_by_level(
    m: int,
    model: LoadedClassifier,
    inputs: ExplainInputs,
    settings: ExplainAdversarialSettings,
    device: torch.device,
    figs: _Figures,
    on_batch: Callable[[int], None],
) -> torch.Tensor:
    """Predicted classes (L, N) of `model` at every level; fills the figure cells."""
    attack = ATTACKS[settings.attack]
    options = AttackOptions.from_settings(settings)
    images = inputs.images
    model.to(device)
    preds = torch.zeros(len(figs.levels), len(images), dtype=torch.long)
    targets = inputs.targets(model)  # (N,), -1 = not a class of the head, or no label
    for s in batches(len(images), settings.batch_size):
        x = images.pixels(s).to(device)
        idx = list(range(s.start, s.stop))
        y = targets[s].to(device)
        for j, level in enumerate(figs.levels):
            xa = attack.perturb(model.pixel_model, x, y, level, indices=idx, options=options)
            with torch.no_grad():
                preds[j, s] = model.pixel_model(xa).argmax(1).cpu()
            figs.add(m, model, idx, j, xa, settings.method)
        on_batch(s.stop - s.start)
    model.to(torch.device("cpu"))
    return preds


def _table(levels: list[float], accs: dict[str, list[float]], attack: Attack) -> None:
    """The accuracy table on stdout (the command's result, also with --quiet)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Accuracy against {attack.level_name}")
    table.add_column(attack.level_name, justify="right")
    for name in accs:
        table.add_column(name, justify="right")
    for j, level in enumerate(levels):
        table.add_row(level_key(level), *(f"{accs[n][j]:.4f}" for n in accs))
    Console().print(table)


def _predictions_csv(
    levels: list[float], inputs: ExplainInputs, preds: dict[str, torch.Tensor]
) -> str:
    """One row per image, model and level: the predicted class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # IDs are file names: quote commas
    writer.writerow(["index", "id", "model", "level", "prediction"])
    ids = inputs.images.ids
    for model in inputs.models:
        p = preds[model.name]
        for i, image_id in enumerate(ids):
            for j, level in enumerate(levels):
                name = model.class_names[int(p[j, i])]
                writer.writerow([i, image_id, model.name, level_key(level), name])
    return buf.getvalue()


def _csv(levels: list[float], accs: dict[str, list[float]]) -> str:
    buf = io.StringIO()
    buf.write(",".join(["level", *accs]) + "\n")
    for j, level in enumerate(levels):
        buf.write(",".join([level_key(level), *(f"{accs[n][j]:.6f}" for n in accs)]) + "\n")
    return buf.getvalue()


def _accuracy_outputs(
    run_dir: RunDir,
    levels: list[float],
    accs: dict[str, list[float]],
    settings: ExplainAdversarialSettings,
    split: str,
) -> dict[str, Any]:
    """`accuracy_<attack>.csv|png` (labelled images only); their metrics.json entries."""
    plot = figures.save_figure(
        figures.accuracy_plot(
            levels,
            accs,
            ATTACKS[settings.attack].axis_label,
            f"Accuracy under {settings.attack} ({split})",
        ),
        run_dir.path / f"accuracy_{settings.attack}.png",
    )
    table_path = run_dir.path / f"accuracy_{settings.attack}.csv"
    atomic.write_text(table_path, _csv(levels, accs))
    return {"table": str(table_path), "plot": str(plot)}


def run(settings: ExplainAdversarialSettings) -> dict[str, Any]:
    """Accuracy per level for every model, per-image figures; returns the metrics."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    levels = settings.level_values()
    attack = ATTACKS[settings.attack]
    inputs = load_inputs(settings, settings.images)
    images, models = inputs.images, inputs.models
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)

    n = len(images)
    n_fig = n if settings.figures is None else min(n, settings.figures)
    figs = _Figures(n_fig, levels, tuple(images.images.shape[1:]))
    accs: dict[str, list[float]] = {}
    preds: dict[str, torch.Tensor] = {}
    records = []
    with ProgressBar(
        n * len(models), f"{settings.attack} x {len(levels)} levels", settings.quiet
    ) as bar:
        for m, model in enumerate(models):
            advance = partial(bar.advance, model=model.name)
            p = _predictions_by_level(m, model, inputs, settings, device, figs, advance)
            preds[model.name] = p
            record = {"checkpoint": model.checkpoint, "name": model.name, "attack": settings.attack}
            if inputs.labelled:
                acc = (p == inputs.targets(model)[None]).double().mean(1).tolist()
                accs[model.name] = acc
                pairs = list(zip(levels, acc, strict=True))
                record["accuracy_by_level"] = {level_key(lv): a for lv, a in pairs}
                text = ", ".join(f"{level_key(lv)}: {a:.3f}" for lv, a in pairs)
                log(f"{model.name}: accuracy {text}", settings.quiet)
            records.append(record)

    fig_dir = run_dir.path / "figures"
    figs.write(fig_dir, [mdl.name for mdl in models], inputs.tags, attack, settings)
    pred_path = run_dir.path / "predictions.csv"
    atomic.write_text(pred_path, _predictions_csv(levels, inputs, preds))
    metrics = {
        "models": records,
        "attack": settings.attack,
        "levels": [float(lv) for lv in levels],
        "labelled": inputs.labelled,
        "split": images.split if inputs.labelled else None,
        "images_dir": None if inputs.labelled else str(images.root),
        "images": n,
        "figures": n_fig,
        "figures_dir": str(fig_dir) if n_fig else None,
        "predictions": str(pred_path),
        "method": settings.method,
        "cmap": settings.cmap,
        **attack.metrics(AttackOptions.from_settings(settings)),
    }
    if inputs.labelled:
        metrics.update(_accuracy_outputs(run_dir, levels, accs, settings, images.split))
    run_dir.update_metrics(**metrics)
    run_dir.close()
    if inputs.labelled:
        _table(levels, accs, attack)
    return metrics
