"""Weighted k-nearest-neighbour accuracy on frozen features (common SSL practice).

Features are L2-normalised; each test item takes its k most cosine-similar training
items, which vote for their class with weight exp(similarity / temperature).
(The settings' k=20, temperature 0.07 are InstDisc's / DINO's kNN evaluation.)
"""

from __future__ import annotations

import time
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from tempo_cli.evaluate.batchnorm import REFERENCE_TEST_BATCH, REFERENCE_TRAIN_BATCH, BnBatches
from tempo_cli.evaluate.features import FeatureRecipe, FeatureSet
from tempo_cli.evaluate.linear import check_classes
from tempo_cli.evaluate.predictions import Predictions
from tempo_cli.evaluate.protocol import SWEEP_FIGURE, EvalProtocol, Task
from tempo_cli.evaluate.results import CurveResult
from tempo_cli.settings.evaluate import EvalKnnSettings


@torch.no_grad()
def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> Tensor:
    """Predicted classes (M,) of test_x (M, d) from train_x (N, d), train_y (N,).

    `k` neighbours vote with weight exp(similarity / temperature); test items are scored
    `chunk` at a time (bounds the (chunk, N) similarity matrix).
    """
    train = F.normalize(train_x.float(), dim=1)
    k = min(int(k), train.shape[0])
    preds = []
    for lo in range(0, test_x.shape[0], chunk):
        q = F.normalize(test_x[lo : lo + chunk].float(), dim=1)
        sim, idx = (q @ train.T).topk(k, dim=1)  # (m, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_y[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_result(
    train: FeatureSet,
    test: FeatureSet,
    *,
    checkpoint: str,
    samples_pc: int | None,
    k: int,
    temperature: float,
) -> CurveResult:
    """kNN accuracy as a one-run, one-step CurveResult (so tables and plots treat all
    protocols alike)."""
    start = time.perf_counter()
    c = check_classes(train, test)
    pred = knn_predict(train.features, train.labels, test.features, c, k, temperature)
    acc = (pred == test.labels).float().mean()
    return CurveResult(
        protocol="knn",
        checkpoint=checkpoint,
        samples_pc=samples_pc,
        accuracy=acc.view(1, 1),
        steps=torch.tensor([0]),
        seconds=time.perf_counter() - start,
        extra={"k": min(k, len(train)), "temperature": temperature},
        predictions=Predictions(pred.view(1, -1), test.labels),
    )


class KnnProtocol(EvalProtocol):
    """`tempo eval knn`: one number per split, so no per-step curve figure."""

    name = "knn"
    settings_cls = EvalKnnSettings
    figures = (SWEEP_FIGURE,)

    def evaluate(self, task: Task) -> list[CurveResult]:
        s = cast(EvalKnnSettings, task.settings)  # the registry pairs them by this class
        # one run: batch mode uses run 0's shuffles, BatchNorm batches as the linear probe's
        batches = BnBatches.resolve(s.bn_batches(), REFERENCE_TRAIN_BATCH, REFERENCE_TEST_BATCH)
        source = task.feature_source(FeatureRecipe(task.image_size, s.bn_stats, s.seed, batches))
        train, test = source.pair(task.split)
        train = train.take(task.labels.for_run(0))  # a subset drawn from train, if any
        res = knn_result(
            train,
            test,
            checkpoint=task.label,
            samples_pc=task.samples_pc,
            k=s.k,
            temperature=s.temperature,
        )
        res.extra.update(source.describe())
        res.extra.update(task.labels.describe())
        return [res]
