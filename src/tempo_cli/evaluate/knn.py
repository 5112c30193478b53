"""Weighted k-nearest-neighbour accuracy on frozen features (common SSL practice).

Features are L2-normalised; each test item takes its k most cosine-similar training
items, which vote for their class with weight exp(similarity / temperature).
(k=20, temperature 0.07 as in InstDisc / DINO's kNN evaluation.)
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from tempo_cli.evaluate.features import FeatureSet
from tempo_cli.evaluate.linear import check_classes
from tempo_cli.evaluate.results import CurveResult


@torch.no_grad()
def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Predicted classes (M,) of test_x (M, d) from train_x (N, d), train_y (N,)."""
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
    k: int = 20,
    temperature: float = 0.07,
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
    )
