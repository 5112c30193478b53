"""Linear evaluation (SPEC.md): frozen backbone, features once, R fresh heads trained at once.

`--bn-stats batch` makes features anew for every run (the reference's shuffles), so there
the runs are trained one after the other, each on its own features. An `--lr` grid trains
every lr's heads in the same pass; the lr and the run whose head is kept are chosen on the
`val` split when the data has one (`evaluate/train_labels.py`), else on test.

`linear_curves` runs the protocol on a FeatureSource; `evaluate_linear` is the entry point
for a model already in memory (`tempo pretrain --eval` calls it); `LinearProtocol` is
`tempo eval linear` in the protocol registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli.errors import TempoError
from tempo_cli.evaluate.batchnorm import REFERENCE_TEST_BATCH, BnBatches
from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.features import FeatureRecipe, FeatureSet, FeatureSource
from tempo_cli.evaluate.linear_probe import (
    ProbeResult,
    pick_best_run,
    select_lr,
    train_probe_grid,
)
from tempo_cli.evaluate.predictions import Predictions
from tempo_cli.evaluate.protocol import EvalProtocol, Task
from tempo_cli.evaluate.results import CurveResult
from tempo_cli.evaluate.splits import Splits, feature_splits
from tempo_cli.evaluate.train_labels import (
    TrainingLabels,
    resolve_training_labels,
    selection_split,
)
from tempo_cli.settings.evaluate import EvalLinearSettings


def check_classes(train: FeatureSet, test: FeatureSet) -> int:
    """Number of classes C shared by both splits (they index the same class list)."""
    if train.class_names != test.class_names:
        raise TempoError(
            f"splits {train.split!r} and {test.split!r} list different classes; "
            "they must come from the same dataset root"
        )
    return len(train.class_names)


def linear_recipe(config: ProbeConfig, image_size: int | None) -> FeatureRecipe:
    """How the linear protocol's features are made: BatchNorm batches default to the
    probe's training batches (the reference's loader served both) and test batches of 10."""
    batches = BnBatches.resolve(config.bn_batch_size, config.batch_size, REFERENCE_TEST_BATCH)
    return FeatureRecipe(image_size, config.bn_stats, config.seed, batches)


def _check(splits: Splits) -> int:
    """Number of classes C, the same for every split of the task."""
    c = check_classes(splits.train, splits.test)
    if splits.val is not None:
        check_classes(splits.train, splits.val)
    return c


def _grid(
    splits: Splits,
    config: ProbeConfig,
    labels: TrainingLabels,
    device: torch.device | str,
    progress: Callable[[int], None] | None,
    first_run: int = 0,
) -> list[ProbeResult]:
    """Every lr's runs at once on `splits`: one ProbeResult per lr."""
    train, test, val = splits
    return train_probe_grid(
        train.features,
        train.labels,
        test.features,
        test.labels,
        _check(splits),
        config,
        config.lrs,
        device=device,
        progress=progress,
        first_run=first_run,
        val=None if val is None else (val.features, val.labels),
        subsets=labels.run_subsets(config.runs, first_run),
    )


def _merge_runs(parts: list[ProbeResult]) -> ProbeResult:
    """Runs trained one after the other (each on its own features) as one result."""
    vals = [p.val_accuracy for p in parts if p.val_accuracy is not None]
    val = torch.cat(vals) if len(vals) == len(parts) else None
    accuracy = torch.cat([p.accuracy for p in parts])
    return ProbeResult(
        test_pred=_cat([p.test_pred for p in parts]),
        val_pred=_cat([p.val_pred for p in parts]),
        accuracy=accuracy,
        weight=torch.cat([p.weight for p in parts]),
        bias=torch.cat([p.bias for p in parts]),
        best_run=pick_best_run(accuracy, val),
        lr=parts[0].lr,
        val_accuracy=val,
    )


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    kept = [p for p in parts if p is not None]
    return torch.cat(kept) if len(kept) == len(parts) else None


def _probes(
    source: FeatureSource,
    labels: TrainingLabels,
    config: ProbeConfig,
    val_split: str | None,
    device: torch.device | str,
    progress: Callable[[int], None] | None,
) -> tuple[list[ProbeResult], Splits]:
    """All runs and lrs at once on shared features; or, when every run has features of
    its own (batch mode), run by run, each on its own features, as the reference.
    Returns one ProbeResult per lr and the (last run's) feature splits."""
    if not source.per_run:
        splits = feature_splits(source, labels.split, val_split)
        return _grid(splits, config, labels, device, progress), splits
    per_run: list[list[ProbeResult]] = []
    one = replace(config, runs=1)
    for r in range(config.runs):
        splits = feature_splits(source, labels.split, val_split, run=r)
        tick = (
            None
            if progress is None
            else partial(_tick, progress, config.runs, r * config.iterations)
        )
        per_run.append(_grid(splits, one, labels, device, tick, first_run=r))
    return [_merge_runs(list(by_lr)) for by_lr in zip(*per_run, strict=True)], splits


def _tick(progress: Callable[[int], None], runs: int, done: int, step: int) -> None:
    """`progress` counts the iterations of one run: R runs trained one after the other
    advance it by 1/R per step."""
    progress((done + step) // runs)


def linear_curves(
    source: FeatureSource,
    labels: TrainingLabels,
    config: ProbeConfig,
    *,
    checkpoint: str,
    val_split: str | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[CurveResult]:
    """The linear protocol on `source`'s features of `labels`' training images and `test`:
    one CurveResult (accuracy (runs, iterations + 1)) per lr of `config.lrs`, the one
    chosen (on `val_split` when given, else on test) marked `selected`."""
    start = time.perf_counter()
    results, splits = _probes(source, labels, config, val_split, device, progress)
    chosen = select_lr(results)
    drawn = labels.for_run(0) if labels.drawn else None
    n_train = len(splits.train) if drawn is None else len(drawn)
    extra = {"train_images": n_train, "test_images": len(splits.test), **source.describe()}
    extra.update(labels.describe())
    seconds = (time.perf_counter() - start) / len(results)  # one pass trained them all
    return [
        CurveResult(
            protocol="linear",
            checkpoint=checkpoint,
            samples_pc=labels.samples_pc,
            accuracy=res.accuracy,
            steps=res.steps,
            best_run=res.best_run,
            linear=res.head(),
            seconds=seconds,
            extra=dict(extra),
            lr=res.lr,
            val_accuracy=res.val_accuracy,
            selected=j == chosen,
            predictions=_predictions(res, splits),
        )
        for j, res in enumerate(results)
    ]


def _predictions(res: ProbeResult, splits: Splits) -> Predictions | None:
    """The final heads' per-image predictions on test (and val), to keep."""
    if res.test_pred is None:
        return None
    val = splits.val.labels if splits.val is not None and res.val_pred is not None else None
    return Predictions(res.test_pred, splits.test.labels, res.val_pred, val)


def evaluate_linear(
    model: Any,
    data_root: str | Path,
    samples_pc: int | None,
    config: ProbeConfig,
    *,
    image_size: int | None,
    device: torch.device | str = "cpu",
    quiet: bool = True,
    model_id: str | None = None,
) -> tuple[dict[str, Any], nn.Linear]:
    """Linear evaluation of an in-memory model (a `models.checkpoint.LoadedModel`).

    Args:
        model: LoadedModel (uses `.backbone`, `.name`, `.path`).
        data_root: dataset root holding `train[-N]/` and `test/` (and `val/`: the best
            run is then chosen on it).
        samples_pc: N of `train-N` (or N per class drawn from train), None = `train`.
        config: the probe (e.g. `ProbeConfig.default(EvalLinearSettings)`, or
            `PRETRAIN_EVAL_PROBE`); `config.bn_stats`, `config.bn_batch_size` and
            `config.seed` also say how the features are made.
        image_size: the input side the images are resized and cropped to.
        model_id: feature-cache key (`models.content_id.checkpoint_id`); None (default)
            = no caching, right for a model still in training.
    Returns:
        (record with the CLI.md `results` keys, the selected run's nn.Linear(d, C) on CPU).
    """
    root = Path(data_root)
    labels = resolve_training_labels(root, samples_pc, seed=config.seed, runs=config.runs)
    recipe = linear_recipe(config, image_size)
    source = FeatureSource(model_id, lambda: model.backbone, root, recipe, device, quiet)
    name = str(getattr(model, "name", "") or getattr(model, "path", "") or "model")
    results = linear_curves(
        source,
        labels,
        config,
        checkpoint=name,
        val_split=selection_split(root),
        device=device,
    )
    res = next(r for r in results if r.selected)
    assert res.linear is not None
    return res.record(), res.linear


class LinearProtocol(EvalProtocol):
    """`tempo eval linear`: frozen features, all runs' heads trained at once."""

    name = "linear"
    settings_cls = EvalLinearSettings

    def evaluate(self, task: Task) -> list[CurveResult]:
        config = ProbeConfig.from_settings(task.settings)
        source = task.feature_source(linear_recipe(config, task.image_size))
        with task.progress(self.name, config.iterations) as bar:
            return linear_curves(
                source,
                task.labels,
                config,
                checkpoint=task.label,
                val_split=task.val_split,
                device=task.device,
                progress=bar.advance_to,
            )
