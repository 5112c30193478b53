"""Semi-supervised evaluation (SPEC.md): fine-tune every parameter with a fresh linear head.

Per run: a fresh copy of the checkpoint's backbone, a fresh `Linear(d, C)` (initialised
from the run's generator, as the linear probe), SGD (lr 0.01) over all parameters, batches
of 128 reshuffled every pass, 200 iterations, test accuracy before training and every
`eval_every` iterations. `bn_stats="running"` tests in eval mode (the standard);
`"batch"` keeps the model in train mode while testing, in batches of 20 (the reference).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tempo_cli.evaluate.linear_probe import init_head, run_generator
from tempo_cli.evaluate.results import CurveResult, steps_tensor

REFERENCE_TEST_BATCH = 20


@torch.no_grad()
def _accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    device: torch.device,
    bn_stats: str,
    batch_size: int,
) -> float:
    """Test accuracy of `model` on uint8 images (M, 3, S, S), labels (M,)."""
    from tempo_cli.data.transforms import normalize_uint8

    was_training = model.training
    model.train(bn_stats == "batch")
    correct = 0
    for lo in range(0, images.shape[0], batch_size):
        x = normalize_uint8(images[lo : lo + batch_size].to(device))
        pred = model(x).argmax(dim=1).cpu()
        correct += int((pred == labels[lo : lo + batch_size]).sum())
    model.train(was_training)
    return correct / images.shape[0]


def finetune_curves(
    backbone: nn.Module,
    feature_dim: int,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    checkpoint: str,
    samples_pc: int | None,
    runs: int = 10,
    iterations: int = 200,
    batch_size: int = 128,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    eval_every: int = 1,
    bn_stats: str = "running",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> CurveResult:
    """Fine-tune `runs` copies of `backbone` + fresh heads; accuracy (runs, S).

    Args:
        backbone: (N, 3, H, W) -> (N, feature_dim); copied per run, never modified.
        train_images / test_images: uint8 (N, 3, S, S) / (M, 3, S, S); labels (N,) / (M,).
    Returns:
        CurveResult with the best run's head and fine-tuned backbone state.
    """
    from tempo_cli.data.transforms import normalize_uint8
    from tempo_cli.models.classifier import Classifier

    start = time.perf_counter()
    device = torch.device(device)
    steps = steps_tensor(iterations, eval_every)
    test_bs = REFERENCE_TEST_BATCH if bn_stats == "batch" else 128
    n = train_images.shape[0]
    acc = torch.zeros(runs, len(steps))
    best: tuple[float, int, dict[str, Tensor], nn.Linear] | None = None
    done = 0
    for run in range(runs):
        g = run_generator(seed, run)
        order = torch.randperm(n, generator=g)
        w0, b0 = init_head(num_classes, feature_dim, g)
        linear = nn.Linear(feature_dim, num_classes)
        with torch.no_grad():
            linear.weight.copy_(w0)
            linear.bias.copy_(b0)
        model = Classifier(copy.deepcopy(backbone), linear).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        col = 0
        acc[run, col] = _accuracy(model, test_images, test_labels, device, bn_stats, test_bs)
        col += 1
        pos = 0
        for it in range(1, iterations + 1):
            if pos >= n:  # a new pass: reshuffle, as a shuffled DataLoader
                order = torch.randperm(n, generator=g)
                pos = 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            x = normalize_uint8(train_images[idx].to(device))
            y = train_labels[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if col < len(steps) and it == int(steps[col]):
                acc[run, col] = _accuracy(
                    model, test_images, test_labels, device, bn_stats, test_bs
                )
                col += 1
            done += 1
            if progress is not None:
                progress(done)
        final = float(acc[run, -1])
        if best is None or final > best[0]:
            state = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
            best = (final, run, state, copy.deepcopy(model.linear).cpu())
    assert best is not None
    return CurveResult(
        protocol="semisup",
        checkpoint=checkpoint,
        samples_pc=samples_pc,
        accuracy=acc,
        steps=steps,
        best_run=best[1],
        linear=best[3],
        backbone_state=best[2],
        seconds=time.perf_counter() - start,
        extra={"train_images": n, "test_images": int(test_images.shape[0])},
    )
