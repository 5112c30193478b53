"""Linear evaluation (SPEC.md): frozen backbone, features once, R fresh heads trained at once.

`linear_curves` runs the protocol on two FeatureSets; `evaluate_linear` is the entry point
for a model already in memory (`tempo pretrain --eval` calls it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli.errors import TempoError
from tempo_cli.evaluate.features import FeatureSet, cached_features
from tempo_cli.evaluate.linear_probe import train_linear_probes
from tempo_cli.evaluate.results import CurveResult


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
    *,
    checkpoint: str,
    samples_pc: int | None,
    runs: int = 10,
    iterations: int = 3000,
    batch_size: int = 24,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress=None,
) -> CurveResult:
    """The linear protocol on cached features: accuracy (runs, iterations + 1)."""
    start = time.perf_counter()
    c = check_classes(train, test)
    res = train_linear_probes(
        train.features,
        train.labels,
        test.features,
        test.labels,
        num_classes=c,
        runs=runs,
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
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
    *,
    image_size: int | None = 128,
    runs: int = 10,
    iterations: int = 3000,
    batch_size: int = 24,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    bn_stats: str = "running",
    seed: int = 0,
    device: torch.device | str = "cpu",
    quiet: bool = True,
    model_id: str | None = None,
) -> tuple[dict[str, Any], nn.Linear]:
    """Linear evaluation of an in-memory model (a `models.checkpoint.LoadedModel`).

    Args:
        model: LoadedModel (uses `.backbone`, `.name`, `.path`).
        data_root: dataset root holding `train[-N]/` and `test/`.
        samples_pc: N of `train-N`, None = the full `train` split.
        model_id: feature-cache key (`models.checkpoint.checkpoint_id`); None (default)
            = no caching, right for a model still in training.
    Returns:
        (record with the CLI.md `results` keys, the best run's nn.Linear(d, C) on CPU).
    """
    from tempo_cli.data.labelled import split_name

    root = Path(data_root)
    train = cached_features(
        model_id,
        lambda: model.backbone,
        root,
        split_name(samples_pc),
        image_size,
        bn_stats,
        device,
        seed,
        quiet,
    )
    test = cached_features(
        model_id, lambda: model.backbone, root, "test", image_size, bn_stats, device, seed, quiet
    )
    res = linear_curves(
        train,
        test,
        checkpoint=str(getattr(model, "name", "") or getattr(model, "path", "") or "model"),
        samples_pc=samples_pc,
        runs=runs,
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
    )
    record = res.record()
    record["bn_stats"] = bn_stats
    assert res.linear is not None
    return record, res.linear
