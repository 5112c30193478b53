"""Linear evaluation (SPEC.md): frozen backbone, features once, R fresh heads trained at once.

`linear_curves` runs the protocol on two FeatureSets; `evaluate_linear` is the entry point
for a model already in memory (`tempo pretrain --eval` calls it); `LinearProtocol` is
`tempo eval linear` in the protocol registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli.errors import TempoError
from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.features import FeatureRecipe, FeatureSet, cached_features
from tempo_cli.evaluate.linear_probe import train_linear_probes
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


def linear_curves(
    train: FeatureSet,
    test: FeatureSet,
    config: ProbeConfig,
    *,
    checkpoint: str,
    samples_pc: int | None,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> CurveResult:
    """The linear protocol on cached features: accuracy (runs, iterations + 1)."""
    start = time.perf_counter()
    c = check_classes(train, test)
    res = train_linear_probes(
        train.features,
        train.labels,
        test.features,
        test.labels,
        c,
        config,
        device=device,
        progress=progress,
    )
    return CurveResult(
        protocol="linear",
        checkpoint=checkpoint,
        samples_pc=samples_pc,
        accuracy=res.accuracy,
        steps=res.steps,
        best_run=res.best_run,
        linear=res.head(),
        seconds=time.perf_counter() - start,
        extra={"train_images": len(train), "test_images": len(test)},
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
            `PRETRAIN_EVAL_PROBE`); `config.bn_stats` and `config.seed` also key the
            features.
        image_size: the input side the images are resized and cropped to.
        model_id: feature-cache key (`models.content_id.checkpoint_id`); None (default)
            = no caching, right for a model still in training.
    Returns:
        (record with the CLI.md `results` keys, the best run's nn.Linear(d, C) on CPU).
    """
    from tempo_cli.data.labelled import split_name

    root = Path(data_root)
    recipe = FeatureRecipe(image_size, config.bn_stats, config.seed)

    def features(split: str) -> FeatureSet:
        return cached_features(model_id, lambda: model.backbone, root, split, recipe, device, quiet)

    train, test = features(split_name(samples_pc)), features("test")
    name = str(getattr(model, "name", "") or getattr(model, "path", "") or "model")
    res = linear_curves(train, test, config, checkpoint=name, samples_pc=samples_pc, device=device)
    record = res.record()
    record["bn_stats"] = config.bn_stats
    assert res.linear is not None
    return record, res.linear


class LinearProtocol(EvalProtocol):
    """`tempo eval linear`: frozen features, all runs' heads trained at once."""

    name = "linear"
    settings_cls = EvalLinearSettings

    def evaluate(self, task: Task) -> CurveResult:
        train, test = task.train_and_test_features()
        config = ProbeConfig.from_settings(task.settings)
        with task.progress(self.name, config.iterations) as bar:
            return linear_curves(
                train,
                test,
                config,
                checkpoint=task.label,
                samples_pc=task.samples_pc,
                device=task.device,
                progress=bar.advance_to,
            )
