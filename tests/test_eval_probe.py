"""The batched linear probe keeps the reference protocol; kNN and feature extraction."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tempo_cli.evaluate.config import ProbeConfig
from tempo_cli.evaluate.features import extract_features
from tempo_cli.evaluate.knn import knn_predict
from tempo_cli.evaluate.linear_probe import train_linear_probes
from tempo_cli.evaluate.reference import reference_linear_eval
from tempo_cli.settings.evaluate import EvalLinearSettings, EvalSemisupSettings


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
    config = ProbeConfig(
        runs=runs,
        iterations=iters,
        batch_size=6,
        lr=0.05,
        weight_decay=1e-3,
        seed=7,
        bn_stats="running",
    )
    res = train_linear_probes(tr_x, tr_y, te_x, te_y, c, config, method=method)
    assert res.accuracy.shape == (runs, iters + 1)
    assert res.weight.shape == (runs, c, d) and res.bias.shape == (runs, c)
    for r in range(runs):
        acc, head = reference_linear_eval(tr_x, tr_y, te_x, te_y, c, config, run=r)
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
    config = ProbeConfig.default(EvalLinearSettings, runs=2, iterations=10, batch_size=4)
    full = train_linear_probes(tr_x, tr_y, te_x, te_y, c, config)
    thin = train_linear_probes(tr_x, tr_y, te_x, te_y, c, replace(config, eval_every=4))
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
    pred = knn_predict(tr_x, tr_y, te_x, 4, k=5, temperature=0.07)
    assert pred.shape == (20,)
    assert float((pred == te_y).float().mean()) > 0.9
    # k larger than the training set is clipped
    assert knn_predict(tr_x[:3], tr_y[:3], te_x, 4, k=20, temperature=0.07).shape == (20,)


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


def test_probe_config_reads_the_settings() -> None:
    from tempo_cli.evaluate.config import PRETRAIN_EVAL_PROBE
    from tempo_cli.settings.evaluate import EvalSemisupSettings

    s = EvalSemisupSettings(path=["random"], runs=4, lr=0.5, eval_every=3, bn_stats="batch")
    cfg = ProbeConfig.from_settings(s)
    assert (cfg.runs, cfg.iterations, cfg.batch_size, cfg.lr) == (4, 200, 128, 0.5)
    assert (cfg.weight_decay, cfg.eval_every, cfg.bn_stats, cfg.seed) == (0.0, 3, "batch", 0)
    # the class defaults without building settings (whose --path is required)
    linear = ProbeConfig.from_settings(EvalLinearSettings(path=["random"]))
    assert ProbeConfig.default(EvalLinearSettings) == linear
    assert (linear.iterations, linear.batch_size, linear.eval_every) == (3000, 24, 1)
    # SPEC.md's `pretrain --eval` probe: the linear protocol with 3 runs, batches of 10
    assert replace(linear, runs=3, batch_size=10) == PRETRAIN_EVAL_PROBE
    with pytest.raises(AttributeError):
        linear.runs = 2  # type: ignore[misc]  # frozen: one object passed down safely


def test_protocol_registry_matches_the_commands() -> None:
    from tempo_cli.cli.evaluate import eval_app
    from tempo_cli.evaluate.protocols import PROTOCOLS, protocol_for

    commands = {c.name for c in eval_app.registered_commands}
    assert set(PROTOCOLS) == commands == {"linear", "semisup", "knn"}
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name
        assert protocol_for(protocol.settings_cls(path=["random"])) is protocol
    assert PROTOCOLS["knn"].figures == ("accuracy_vs_samples.png",)


class _SignalOnStep(torch.nn.Module):
    """A tiny backbone that sends SIGTERM to this process during training step `at`."""

    calls = [0]  # shared by the per-run deep copies

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            import os
            import signal

            self.calls[0] += 1
            if self.calls[0] == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return self.pool(self.conv(x)).flatten(1)


def _tiny_images(n: int) -> tuple:
    from tempo_cli.evaluate.semisup import Images

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return Images(images, torch.arange(n) % 2), Images(images[:4], torch.arange(4) % 2)


def test_semisup_stops_between_steps_on_sigterm() -> None:
    import signal

    from tempo_cli.errors import Interrupted
    from tempo_cli.evaluate.semisup import finetune_curves

    train, test = _tiny_images(8)
    config = ProbeConfig.default(EvalSemisupSettings, runs=2, iterations=5, batch_size=4)
    before = signal.getsignal(signal.SIGTERM)
    _SignalOnStep.calls[0] = 0
    with pytest.raises(Interrupted, match="SIGTERM received at step 2 of run 2"):
        finetune_curves(
            _SignalOnStep(at=7), 4, train, test, 2, config, checkpoint="x", samples_pc=1
        )
    assert _SignalOnStep.calls[0] == 7  # the step in flight finished; no further step began
    assert signal.getsignal(signal.SIGTERM) == before


def test_semisup_stops_on_a_non_finite_loss() -> None:
    from tempo_cli.errors import TempoError
    from tempo_cli.evaluate.semisup import finetune_curves

    train, test = _tiny_images(8)
    config = ProbeConfig.default(EvalSemisupSettings, runs=1, iterations=4, batch_size=4)
    _SignalOnStep.calls[0] = 0
    with pytest.raises(TempoError, match="non-finite .* at step 2; .*lower --lr"):
        finetune_curves(
            _SignalOnStep(at=-1),
            4,
            train,
            test,
            2,
            replace(config, lr=float("inf")),
            checkpoint="x",
            samples_pc=1,
        )
