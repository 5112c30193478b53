"""Linear evaluation (SPEC.md): frozen backbone, features once, R fresh heads trained at once.

`--bn-stats batch` makes features anew for every run (the reference's shuffles), so there
the runs are trained one after the other, each on its own features.

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
from tempo_cli.evaluate.linear_probe import ProbeResult, pick_best_run, train_linear_probes
from tempo_cli.evaluate.protocol import EvalProtocol, Task
from tempo_cli.evaluate.results import CurveResult
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


def _probes(
    source: FeatureSource,
    train_split: str,
    config: ProbeConfig,
    device: torch.device | str,
    progress: Callable[[int], None] | None,
) -> tuple[ProbeResult, FeatureSet, FeatureSet]:
    """All runs at once on shared features; or, when every run has features of its own
    (batch mode), run by run, each on its own features, as the reference."""
    if not source.per_run:
        train, test = source.pair(train_split)
        c = check_classes(train, test)
        args = (train.features, train.labels, test.features, test.labels, c)
        return train_linear_probes(*args, config, device=device, progress=progress), train, test
    parts: list[ProbeResult] = []
    one = replace(config, runs=1)
    for r in range(config.runs):
        train, test = source.pair(train_split, run=r)
        c = check_classes(train, test)
        args = (train.features, train.labels, test.features, test.labels, c)
        tick = (
            None
            if progress is None
            else partial(_tick, progress, config.runs, r * config.iterations)
        )
        parts.append(train_linear_probes(*args, one, device=device, progress=tick, first_run=r))
    accuracy = torch.cat([p.accuracy for p in parts])
    res = ProbeResult(
        accuracy=accuracy,
        weight=torch.cat([p.weight for p in parts]),
        bias=torch.cat([p.bias for p in parts]),
        best_run=pick_best_run(accuracy),
    )
    return res, train, test


def _tick(progress: Callable[[int], None], runs: int, done: int, step: int) -> None:
    """`progress` counts the iterations of one run: R runs trained one after the other
    advance it by 1/R per step."""
    progress((done + step) // runs)


def linear_curves(
    source: FeatureSource,
    train_split: str,
    config: ProbeConfig,
    *,
    checkpoint: str,
    samples_pc: int | None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> CurveResult:
    """The linear protocol on `source`'s features of `train_split` and `test`: accuracy
    (runs, iterations + 1)."""
    start = time.perf_counter()
    res, train, test = _probes(source, train_split, config, device, progress)
    return CurveResult(
        protocol="linear",
        checkpoint=checkpoint,
        samples_pc=samples_pc,
        accuracy=res.accuracy,
        steps=res.steps,
        best_run=res.best_run,
        linear=res.head(),
        seconds=time.perf_counter() - start,
        extra={"train_images": len(train), "test_images": len(test), **source.describe()},
    )


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
        data_root: dataset root holding `train[-N]/` and `test/`.
        samples_pc: N of `train-N`, None = the full `train` split.
        config: the probe (e.g. `ProbeConfig.default(EvalLinearSettings)`, or
            `PRETRAIN_EVAL_PROBE`); `config.bn_stats`, `config.bn_batch_size` and
            `config.seed` also say how the features are made.
        image_size: the input side the images are resized and cropped to.
        model_id: feature-cache key (`models.content_id.checkpoint_id`); None (default)
            = no caching, right for a model still in training.
    Returns:
        (record with the CLI.md `results` keys, the best run's nn.Linear(d, C) on CPU).
    """
    from tempo_cli.data.labelled import split_name

    recipe = linear_recipe(config, image_size)
    source = FeatureSource(model_id, lambda: model.backbone, data_root, recipe, device, quiet)
    name = str(getattr(model, "name", "") or getattr(model, "path", "") or "model")
    res = linear_curves(
        source,
        split_name(samples_pc),
        config,
        checkpoint=name,
        samples_pc=samples_pc,
        device=device,
    )
    assert res.linear is not None
    return res.record(), res.linear


class LinearProtocol(EvalProtocol):
    """`tempo eval linear`: frozen features, all runs' heads trained at once."""

    name = "linear"
    settings_cls = EvalLinearSettings

    def evaluate(self, task: Task) -> CurveResult:
        config = ProbeConfig.from_settings(task.settings)
        source = task.feature_source(linear_recipe(config, task.image_size))
        with task.progress(self.name, config.iterations) as bar:
            return linear_curves(
                source,
                task.split,
                config,
                checkpoint=task.label,
                samples_pc=task.samples_pc,
                device=task.device,
                progress=bar.advance_to,
            )
