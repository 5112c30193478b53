"""The reference's linear-evaluation loop, re-implemented faithfully (one run at a time).

Kept for two uses only: tests/test_eval_probe.py checks that the batched probe of
`linear_probe.train_linear_probes` reproduces it, and benchmarks/linear_eval_speed.py
times it against the batched probe. Product code never calls it.

What it keeps from the reference (SPEC.md "Linear evaluation"): a fresh `nn.Linear`,
`torch.optim.SGD(lr, weight_decay)`, cross-entropy against one-hot float targets,
training batches cached once per run and cycled, and the test accuracy measured before
the first step and after every step by a Python loop over cached test batches of 10
(one `.item()` per batch), until step `iterations`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.features import REFERENCE_TEST_BATCH
from tempo_cli.evaluate.linear_probe import run_setup


def _test_model(model: nn.Module, test_reps: list[tuple[Tensor, Tensor]], total: int) -> float:
    """The reference's `test_model`: 1 - wrong / len(test set), batch by batch."""
    model.eval()
    wrongly_classified = 0
    for rep, label in test_reps:
        with torch.no_grad():
            preds = model(rep).argmax(dim=1)
        wrongly_classified += (rep.shape[0] - (preds == label).sum()).item()
    model.train()
    return 1.0 - wrongly_classified / total


def reference_linear_eval(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    config: ProbeConfig,
    run: int = 0,
    *,
    test_batch_size: int = REFERENCE_TEST_BATCH,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, nn.Linear]:
    """One run of the reference loop on cached features.

    Args:
        train_x: (N, d), train_y: (N,), test_x: (M, d), test_y: (M,).
        config: iterations, batch_size, lr, weight_decay and seed as the batched probe
            (`config.runs` does not apply: one run here).
        run: with `config.seed`, selects the batch order and head init
            (`linear_probe.run_setup`), so the run is comparable with run `run` of
            `train_linear_probes(..., config)`.
    Returns:
        accuracies (iterations + 1,) after 0..iterations steps, and the trained head.
    """
    n, d = train_x.shape
    batch_size, iterations = config.batch_size, config.iterations
    order, w0, b0 = run_setup(n, num_classes, d, batch_size, config.seed, run)
    model = nn.Linear(d, num_classes).to(device)
    with torch.no_grad():
        model.weight.copy_(w0)
        model.bias.copy_(b0)

    reps = [(train_x[idx].to(device), train_y[idx].to(device)) for idx in order.split(batch_size)]
    test_reps = [
        (test_x[i : i + test_batch_size].to(device), test_y[i : i + test_batch_size].to(device))
        for i in range(0, test_x.shape[0], test_batch_size)
    ]
    total = test_x.shape[0]

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    accuracies: list[float] = []
    running_loss = 0.0  # the reference logs it; its `.item()` is part of the loop's cost
    i = 0
    done = False
    while not done:
        for rep, label in reps:
            accuracies.append(_test_model(model, test_reps, total))
            running_loss = 0.0
            if i == iterations:
                done = True
                break
            labels = nn.functional.one_hot(label, num_classes=num_classes).float()
            optimizer.zero_grad()
            loss = criterion(model(rep), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            i += 1
    return np.asarray(accuracies), model
