"""`tempo explain adversarial`: accuracy and heatmaps under noise (the study) or attacks.

The perturbations (`--attack noise|fgsm|pgd`) are the registered objects of
`explain/attacks.py`. Default levels: the study's noise levels 0, 0.1, ..., 0.5, and L-inf
budgets 0 ... 0.063 in [0, 1] pixel space for the gradient attacks.

Output: `figures/<LETTER>_<index>.png` (the study's figure per image: row 1 the noisy
images "Noise level: x", then per model its heatmaps "Prediction: <LETTER>"; for attacks
each model gets its own row of attacked images), `accuracy_<attack>.csv|png`, a rich
table, metrics.json `models`: [{checkpoint, attack, accuracy_by_level: {level: acc}}].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tempo_cli import atomic
from tempo_cli.data.labelled import LabelledSplit
from tempo_cli.data.transforms import normalize
from tempo_cli.explain import figures
from tempo_cli.explain.attacks import ATTACKS, Attack
from tempo_cli.explain.attribution import attribute, batches
from tempo_cli.explain.inputs import load_inputs
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
        self, folder: Path, names: list[str], labels: list[str], attack: Attack, quiet: bool
    ) -> None:
        """`folder/<LETTER>_<index>.png` for each figure image."""
        n_image_rows = len(names) if attack.per_model_images else 1  # noise: one row
        with ProgressBar(self.n, "figures", quiet) as bar:
            for i in range(self.n):
                fig = figures.level_figure(
                    self.levels,
                    [self.cells[(k, i)].images.float() / 255.0 for k in range(n_image_rows)],
                    [self.cells[(m, i)].maps for m in range(len(names))],
                    [self.cells[(m, i)].preds for m in range(len(names))],
                    names,
                    attack.figure_label,
                    attack.per_model_images,
                )
                figures.save_figure(fig, folder / f"{labels[i]}_{i}.png")
                bar.advance(1)


def _accuracy_by_level(
    m: int,
    model: LoadedClassifier,
    images: LabelledSplit,
    settings: ExplainAdversarialSettings,
    device: torch.device,
    figs: _Figures,
    on_batch: Callable[[int], None],
) -> list[float]:
    """Accuracy of `model` over the split at every level; fills the figure cells."""
    attack = ATTACKS[settings.attack]
    model.to(device)
    n = len(images)
    correct = torch.zeros(len(figs.levels))
    targets = model.label_indices(images.label_names)  # (N,), -1 = not a class of the head
    for s in batches(n, settings.batch_size):
        x = images.pixels(s).to(device)
        idx = list(range(s.start, s.stop))
        y = targets[s].to(device)
        for j, level in enumerate(figs.levels):
            xa = attack.perturb(
                model.pixel_model,
                x,
                y,
                level,
                indices=idx,
                seed=settings.seed,
                steps=settings.steps,
            )
            with torch.no_grad():
                preds = model.pixel_model(xa).argmax(1)
            correct[j] += float((preds.cpu() == targets[s]).sum())
            figs.add(m, model, idx, j, xa, settings.method)
        on_batch(s.stop - s.start)
    model.to(torch.device("cpu"))
    return (correct / max(n, 1)).tolist()


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


def _csv(levels: list[float], accs: dict[str, list[float]]) -> str:
    buf = io.StringIO()
    buf.write(",".join(["level", *accs]) + "\n")
    for j, level in enumerate(levels):
        buf.write(",".join([level_key(level), *(f"{accs[n][j]:.6f}" for n in accs)]) + "\n")
    return buf.getvalue()


def run(settings: ExplainAdversarialSettings) -> dict[str, Any]:
    """Accuracy per level for every model, per-image figures; returns the metrics."""
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    levels = settings.level_values()
    attack = ATTACKS[settings.attack]
    inputs = load_inputs(settings)
    images, models = inputs.images, inputs.models
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)

    n = len(images)
    n_fig = n if settings.figures is None else min(n, settings.figures)
    figs = _Figures(n_fig, levels, tuple(images.images.shape[1:]))
    accs: dict[str, list[float]] = {}
    records = []
    with ProgressBar(
        n * len(models), f"{settings.attack} x {len(levels)} levels", settings.quiet
    ) as bar:
        for m, model in enumerate(models):
            advance = partial(bar.advance, model=model.name)
            acc = _accuracy_by_level(m, model, images, settings, device, figs, advance)
            accs[model.name] = acc
            pairs = list(zip(levels, acc, strict=True))
            by_level = {level_key(lv): a for lv, a in pairs}
            records.append(
                {
                    "checkpoint": model.checkpoint,
                    "name": model.name,
                    "attack": settings.attack,
                    "accuracy_by_level": by_level,
                }
            )
            text = ", ".join(f"{level_key(lv)}: {a:.3f}" for lv, a in pairs)
            log(f"{model.name}: accuracy {text}", settings.quiet)

    fig_dir = run_dir.path / "figures"
    figs.write(fig_dir, [mdl.name for mdl in models], images.label_names, attack, settings.quiet)
    plot = figures.save_figure(
        figures.accuracy_plot(
            levels, accs, attack.axis_label, f"Accuracy under {settings.attack} ({images.split})"
        ),
        run_dir.path / f"accuracy_{settings.attack}.png",
    )
    table_path = run_dir.path / f"accuracy_{settings.attack}.csv"
    atomic.write_text(table_path, _csv(levels, accs))
    metrics = {
        "models": records,
        "attack": settings.attack,
        "levels": [float(lv) for lv in levels],
        "split": images.split,
        "images": n,
        "figures": n_fig,
        "figures_dir": str(fig_dir) if n_fig else None,
        "table": str(table_path),
        "plot": str(plot),
        "method": settings.method,
        **attack.metrics(settings.steps),
    }
    run_dir.update_metrics(**metrics)
    run_dir.close()
    _table(levels, accs, attack)
    return metrics
