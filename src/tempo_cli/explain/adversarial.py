"""`tempo explain adversarial`: accuracy and heatmaps under noise (the study) or attacks.

Noise (`--attack noise`, the study's "adversarial attack"): per-pixel random colour noise,
x' = clip(x + level * u, 0, 1) in [0, 1] pixel space, u uniform in [-1, 1] independently
per pixel and colour channel. u is drawn once per image from a generator seeded by
(`--seed`, image index) and scaled per level, so a noisy image does not depend on the
batch size and the figure shows one noise pattern growing. Default levels 0, 0.1, ..., 0.5.

Attacks (`--attack fgsm|pgd`, beyond the study): captum.robust FGSM / PGD, untargeted,
on the true class (the clean prediction where the model has no such class), with L-inf
budgets epsilon in [0, 1] pixel space; the model normalises inside (`PixelClassifier`),
so the perturbation lives where the noise does. PGD: `--steps` steps of 2.5 * eps / steps,
no random start (deterministic); per image the first misclassified iterate is kept. The
uniform noise of level l lies inside the L-inf ball of an attack of budget l, so the two
are directly comparable.

Output: `figures/<LETTER>_<index>.png` (the study's figure per image: row 1 the noisy
images "Noise level: x", then per model its heatmaps "Prediction: <LETTER>"; for attacks
each model gets its own row of attacked images), `accuracy_<attack>.csv|png`, a rich
table, metrics.json `models`: [{checkpoint, attack, accuracy_by_level: {level: acc}}].
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

from tempo_cli import atomic
from tempo_cli.explain import figures
from tempo_cli.explain.attribution import attribute
from tempo_cli.explain.common import (
    ExplainModel,
    batches,
    label_indices,
    load_classifiers,
    load_images,
    normalize,
)
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import resolve_device, seed_everything
from tempo_cli.settings.explain import ExplainAdversarialSettings


@dataclass
class _FigureCell:
    """One model and image of the per-image figure: at each level the perturbed image
    (uint8 (L, 3, H, W)), the heatmap ((L, H, W)) and the predicted class name."""

    images: torch.Tensor
    maps: torch.Tensor
    preds: list[str]

    @classmethod
    def empty(cls, n_levels: int, size: tuple[int, ...]) -> _FigureCell:
        return cls(
            images=torch.zeros(n_levels, *size, dtype=torch.uint8),
            maps=torch.zeros(n_levels, *size[1:]),
            preds=[""] * n_levels,
        )


def level_key(level: float) -> str:
    """The metrics.json key of a level: `0`, `0.1`, `0.031`."""
    return f"{level:g}"


def noise_pattern(index: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform [-1, 1] noise of `shape` for image `index` (seeded by seed and index)."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.rand(shape, generator=g) * 2.0 - 1.0


def add_noise(x: torch.Tensor, patterns: torch.Tensor, level: float) -> torch.Tensor:
    """clip(x + level * patterns, 0, 1); x, patterns (N, 3, H, W)."""
    return (x + level * patterns).clamp_(0.0, 1.0)


def attack_batch(
    model: ExplainModel,
    x: torch.Tensor,
    target: torch.Tensor,
    attack: str,
    eps: float,
    steps: int,
) -> torch.Tensor:
    """FGSM / PGD adversarial images in [0, 1] (N, 3, H, W) within L-inf `eps` of x.

    PGD runs captum.robust.PGD's own iteration (its FGSM step of 2.5 * eps / steps, then
    the projection onto the eps-ball and [0, 1]) and keeps, per image, the first iterate
    that is misclassified (the final one where none is): the final iterate alone can
    step back out of a misclassified region when steps are large, which made accuracy
    rise with the budget.
    """
    from captum.robust import FGSM, PGD

    if eps <= 0:
        return x.clone()
    x = x.detach()
    if attack == "fgsm":
        fgsm = FGSM(model.pixel_model, lower_bound=0.0, upper_bound=1.0)
        return fgsm.perturb(x.clone().requires_grad_(True), epsilon=eps, target=target).detach()
    if attack != "pgd":
        raise ValueError(f"unknown attack {attack!r}")
    pgd = PGD(model.pixel_model, lower_bound=0.0, upper_bound=1.0)
    step_size = 2.5 * eps / steps
    adv = x.clone()
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        adv = pgd.fgsm.perturb(adv.requires_grad_(True), step_size, target)
        adv = pgd.bound(x + torch.clamp(adv - x, -eps, eps)).detach()
        with torch.no_grad():
            wrong = model.pixel_model(adv).argmax(1) != target
        new = wrong & ~fooled
        best[new] = adv[new]
        fooled |= new
    best[~fooled] = adv[~fooled]
    return best


def _table(levels: list[float], accs: dict[str, list[float]], attack: str) -> None:
    """The accuracy table on stdout (the command's result, also with --quiet)."""
    from rich.console import Console
    from rich.table import Table

    label = "noise level" if attack == "noise" else f"{attack.upper()} epsilon (L-inf)"
    table = Table(title=f"Accuracy against {label}")
    table.add_column(label, justify="right")
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
    attack = settings.attack
    images = load_images(settings.data, settings.split, settings.image_size, settings.quiet)
    models = load_classifiers(settings.path, settings.compare, images.class_names, settings.quiet)
    run_dir = RunDir(settings, root=settings.out)
    run_dir.save_config(settings)

    n, n_levels = len(images), len(levels)
    n_fig = n if settings.figures is None else min(n, settings.figures)
    fig_set = set(range(n_fig))
    size = tuple(images.images.shape[1:])
    cells: dict[tuple[int, int], _FigureCell] = {}  # (model, image) -> what its rows show
    accs: dict[str, list[float]] = {}
    records = []
    with ProgressBar(n * len(models), f"{attack} x {n_levels} levels", settings.quiet) as bar:
        for m, model in enumerate(models):
            model.to(device)
            correct = torch.zeros(n_levels)
            targets_all = label_indices(model, images.labels)
            for s in batches(n, settings.batch_size):
                x = images.pixels(s).to(device)
                idx = list(range(s.start, s.stop))
                targets = targets_all[s].to(device)
                if attack == "noise":
                    patterns = torch.stack([noise_pattern(i, size, settings.seed) for i in idx])
                    patterns = patterns.to(device)
                else:
                    with torch.no_grad():
                        clean = model.pixel_model(x).argmax(1)
                    targets = torch.where(targets >= 0, targets, clean)
                rows = [k for k, i in enumerate(idx) if i in fig_set]
                for j, level in enumerate(levels):
                    if attack == "noise":
                        xa = add_noise(x, patterns, level)
                    else:
                        xa = attack_batch(model, x, targets, attack, level, settings.steps)
                    with torch.no_grad():
                        preds = model.pixel_model(xa).argmax(1)
                    correct[j] += float((preds.cpu() == targets_all[s]).sum())
                    if rows:
                        maps, fpreds = attribute(
                            model.classifier, normalize(xa[rows]), settings.method
                        )
                        shown = (xa[rows].cpu() * 255).round().to(torch.uint8)
                        for r, k in enumerate(rows):
                            cell = cells.setdefault((m, idx[k]), _FigureCell.empty(n_levels, size))
                            cell.maps[j] = maps[r]
                            cell.preds[j] = model.class_names[int(fpreds[r])]
                            cell.images[j] = shown[r]
                bar.advance(s.stop - s.start, model=model.name)
            model.to(torch.device("cpu"))
            acc = (correct / max(n, 1)).tolist()
            accs[model.name] = acc
            records.append(
                {
                    "checkpoint": model.checkpoint,
                    "name": model.name,
                    "attack": attack,
                    "accuracy_by_level": {
                        level_key(lv): a for lv, a in zip(levels, acc, strict=True)
                    },
                }
            )
            log(
                f"{model.name}: accuracy "
                + ", ".join(f"{level_key(lv)}: {a:.3f}" for lv, a in zip(levels, acc, strict=True)),
                settings.quiet,
            )

    fig_dir = run_dir.path / "figures"
    n_image_rows = 1 if attack == "noise" else len(models)
    with ProgressBar(n_fig, "figures", settings.quiet) as bar:
        for i in range(n_fig):
            fig = figures.level_figure(
                levels,
                # noise: one row of noisy images (the same for every model)
                [cells[(k, i)].images.float() / 255.0 for k in range(n_image_rows)],
                [cells[(m, i)].maps for m in range(len(models))],
                [cells[(m, i)].preds for m in range(len(models))],
                [mdl.name for mdl in models],
                attack,
            )
            figures.save_figure(fig, fig_dir / f"{images.labels[i]}_{i}.png")
            bar.advance(1)

    xlabel = "noise level" if attack == "noise" else "epsilon (L-inf, [0, 1] pixels)"
    plot = figures.save_figure(
        figures.accuracy_plot(levels, accs, xlabel, f"Accuracy under {attack} ({images.split})"),
        run_dir.path / f"accuracy_{attack}.png",
    )
    table_path = run_dir.path / f"accuracy_{attack}.csv"
    atomic.write_text(table_path, _csv(levels, accs))
    metrics = {
        "models": records,
        "attack": attack,
        "levels": [float(lv) for lv in levels],
        "split": images.split,
        "images": n,
        "figures": n_fig,
        "figures_dir": str(fig_dir) if n_fig else None,
        "table": str(table_path),
        "plot": str(plot),
        "method": settings.method,
    }
    if attack == "pgd":
        metrics["pgd_steps"] = settings.steps
    run_dir.update_metrics(**metrics)
    run_dir.close()
    _table(levels, accs, attack)
    return metrics
