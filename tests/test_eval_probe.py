"""The batched linear probe keeps the reference protocol; kNN and feature extraction."""

from __future__ import annotations

import pytest
import torch

from tempo_cli.evaluate.features import extract_features
from tempo_cli.evaluate.knn import knn_predict
from tempo_cli.evaluate.linear_probe import train_linear_probes
from tempo_cli.evaluate.reference import reference_linear_eval


def _blobs(n: int, c: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.arange(n) % c
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.mark.parametrize(("method", "iters"), [("kernel", 300), ("primal", 40)])
def test_batched_probe_equals_sequential_reference_loop(method: str, iters: int) -> None:
    # 23 training items in batches of 6: an uneven last batch, cycled; 300 steps cross the
    # kernel form's exact resynchronisation at step 250.
    c, d, runs = 5, 32, 3
    tr_x, tr_y = _blobs(23, c, d, 1)
    te_x, te_y = _blobs(17, c, d, 2)
    res = train_linear_probes(
        tr_x,
        tr_y,
        te_x,
        te_y,
        c,
        runs=runs,
        iterations=iters,
        batch_size=6,
        lr=0.05,
        weight_decay=1e-3,
        seed=7,
        method=method,
    )
    assert res.accuracy.shape == (runs, iters + 1)
    assert res.weight.shape == (runs, c, d) and res.bias.shape == (runs, c)
    for r in range(runs):
        acc, head = reference_linear_eval(
            tr_x,
            tr_y,
            te_x,
            te_y,
            c,
            iterations=iters,
            batch_size=6,
            lr=0.05,
            weight_decay=1e-3,
            seed=7,
            run=r,
        )
        assert acc.shape == (iters + 1,)
        torch.testing.assert_close(
            res.accuracy[r].double(), torch.from_numpy(acc), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(res.weight[r], head.weight.detach(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.bias[r], head.bias.detach(), atol=1e-4, rtol=1e-4)
    # runs differ (own batch order and init), and the probe learns the blobs
    assert not torch.equal(res.weight[0], res.weight[1])
    assert float(res.accuracy[:, -1].mean()) > 0.8


def test_probe_eval_every_and_best_head() -> None:
    c, d = 4, 16
    tr_x, tr_y = _blobs(16, c, d, 3)
    te_x, te_y = _blobs(12, c, d, 4)
    full = train_linear_probes(tr_x, tr_y, te_x, te_y, c, runs=2, iterations=10, batch_size=4)
    thin = train_linear_probes(
        tr_x, tr_y, te_x, te_y, c, runs=2, iterations=10, batch_size=4, eval_every=4
    )
    # scored columns agree; the others repeat the last score
    for s in (0, 4, 8, 10):
        assert torch.equal(thin.accuracy[:, s], full.accuracy[:, s])
    assert torch.equal(thin.accuracy[:, 5], thin.accuracy[:, 4])
    head = full.head()
    assert head.weight.shape == (c, d)
    pred = head(te_x).argmax(1)
    assert float((pred == te_y).float().mean()) == pytest.approx(
        float(full.accuracy[full.best_run, -1]), abs=1e-6
    )


def test_knn_weighted_votes() -> None:
    tr_x, tr_y = _blobs(40, 4, 8, 5)
    te_x, te_y = _blobs(20, 4, 8, 6)
    pred = knn_predict(tr_x, tr_y, te_x, 4, k=5)
    assert pred.shape == (20,)
    assert float((pred == te_y).float().mean()) > 0.9
    # k larger than the training set is clipped
    assert knn_predict(tr_x[:3], tr_y[:3], te_x, 4, k=20).shape == (20,)


def test_extract_features_running_vs_batch_stats() -> None:
    from tempo_cli.models.backbones import build_resnet

    torch.manual_seed(0)
    net = build_resnet("resnet18")
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run = extract_features(net, images, batch_size=3)
    run2 = extract_features(net, images[[6, 0, 1]], batch_size=2)
    assert run.shape == (7, 512)
    torch.testing.assert_close(run2, run[[6, 0, 1]], atol=1e-5, rtol=1e-4)  # batch-independent
    order = torch.tensor([3, 1, 4, 0, 5, 6, 2])
    bat = extract_features(net, images, batch_size=3, bn_stats="batch", order=order)
    assert bat.shape == (7, 512) and not torch.allclose(bat, run)
    # the model is untouched (running statistics not updated by the batch-mode pass)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
