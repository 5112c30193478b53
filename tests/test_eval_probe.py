"""The batched linear probe keeps the reference protocol; kNN and feature extraction."""

from __future__ import annotations

import copy
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
    bat = extract_features(net, images, batch_size=3, batch_stats=True, order=order)
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


# --- BatchNorm statistics: --bn-stats batch (the reference's shuffles) and adapt ---------

#: Class c's images are a flat level 40 + 50 c plus pixel noise: after a BatchNorm in train
#: mode, a feature says where an image lies within ITS batch, so batch composition matters.
_LEVELS = (40, 90, 140, 190)


def _write_split(folder, per_class: int, seed: int) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for c, level in enumerate(_LEVELS):
        (folder / f"c{c}").mkdir(parents=True)
        for k in range(per_class):
            noise = torch.randint(-12, 13, (8, 8, 3), generator=g)
            px = (level + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(folder / f"c{c}" / f"{k}.png")


@pytest.fixture
def levels_root(tmp_path):
    """train: 8 images per class (32), test: 5 per class (20), 8x8 PNGs, class-sorted."""
    _write_split(tmp_path / "levels" / "train", 8, 1)
    _write_split(tmp_path / "levels" / "test", 5, 2)
    return tmp_path / "levels"


class _LevelNet(torch.nn.Module):
    """conv 1x1 -> BatchNorm -> average pool: a 2-d feature per image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.bn = torch.nn.BatchNorm2d(2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.conv(x))).flatten(1)


def _reference_run(net, train, test, config, run: int, test_order) -> torch.Tensor:
    """The reference's linear_eval.py for one run, re-implemented: the backbone is never
    switched to eval mode; features of each shuffled loader batch (train batches = the
    probe's batches, cached and cycled), then its SGD loop. Returns accuracies (T+1,)."""
    from tempo_cli.data.transforms import normalize_uint8
    from tempo_cli.evaluate.linear_probe import run_setup

    n, m, c = len(train.labels), len(test.labels), len(train.class_names)
    order, _, _ = run_setup(n, c, 2, config.batch_size, config.seed, run)  # its shuffle
    net = copy.deepcopy(net).train()
    with torch.no_grad():
        train_x = torch.empty(n, 2)
        for idx in order.split(config.batch_size):
            train_x[idx] = net(normalize_uint8(train.images[idx]))
        test_x = torch.empty(m, 2)
        for idx in test_order.split(10):
            test_x[idx] = net(normalize_uint8(test.images[idx]))
    acc, _ = reference_linear_eval(train_x, train.labels, test_x, test.labels, c, config, run)
    return torch.from_numpy(acc)


def test_bn_stats_batch_reproduces_the_reference_shuffles(levels_root) -> None:
    from tempo_cli.data.labelled import load_split
    from tempo_cli.evaluate.batchnorm import test_order
    from tempo_cli.evaluate.features import FeatureSource
    from tempo_cli.evaluate.linear import linear_curves, linear_recipe
    from tempo_cli.evaluate.train_labels import TrainingLabels

    net = _LevelNet()
    config = ProbeConfig.default(
        EvalLinearSettings, runs=3, iterations=30, batch_size=8, lr=0.5, bn_stats="batch"
    )
    recipe = linear_recipe(config, None)
    assert (recipe.bn_batches.train, recipe.bn_batches.test) == (8, 10)  # auto: --batch-size,10
    source = FeatureSource("levels-net", lambda: net, levels_root, recipe)
    full = TrainingLabels("train", None)
    (res,) = linear_curves(source, full, config, checkpoint="net")
    assert res.extra["bn_stats"] == "batch" and res.extra["bn_batch_size"] == [8, 10]

    train, test = load_split(levels_root, "train", None), load_split(levels_root, "test", None)
    m = len(test.labels)
    shuffled = [_reference_run(net, train, test, config, r, test_order(m, 0, r)) for r in range(3)]
    torch.testing.assert_close(res.accuracy.double(), torch.stack(shuffled), atol=1e-6, rtol=0)
    # features are made anew for every run, each with its run's shuffles
    (tr0, te0), (tr1, te1) = source.pair("train", run=0), source.pair("train", run=1)
    assert not torch.allclose(tr0.features, tr1.features)
    assert not torch.allclose(te0.features, te1.features)
    # ... and cached per run: a fresh source reads them back, same curves
    warm = FeatureSource("levels-net", lambda: None, levels_root, recipe)  # type: ignore[arg-type, return-value]
    (again,) = linear_curves(warm, full, config, checkpoint="net")
    assert all(f.cached for f in warm.pair("train", run=2))
    assert torch.equal(again.accuracy, res.accuracy)

    # class-sorted test batches (each batch of 10 holds 2 classes) lose what tells the
    # classes apart: the accuracy differs, and is far lower
    in_order = torch.stack(
        [_reference_run(net, train, test, config, r, torch.arange(m)) for r in range(3)]
    )
    assert float(in_order[:, -1].mean()) < float(res.accuracy[:, -1].mean()) - 0.2


def test_semisup_batch_mode_tests_in_shuffled_batches(levels_root) -> None:
    """semisup --bn-stats batch scores in train mode on shuffled test batches (the TEST of
    --bn-batch-size), reshuffled at every pass as the reference's shuffled test loader."""
    from tempo_cli.data.labelled import load_split
    from tempo_cli.data.transforms import normalize_uint8
    from tempo_cli.evaluate.batchnorm import BN_MODES, BnBatches, test_generator
    from tempo_cli.evaluate.semisup import Images, _accuracy, _TestPass

    test = load_split(levels_root, "test", None)
    twice = torch.cat([test.labels] * 2).sort(stable=True).indices  # 40 images, by class
    images = Images(torch.cat([test.images] * 2)[twice], torch.cat([test.labels] * 2)[twice])
    net = torch.nn.Sequential(_LevelNet(), torch.nn.Linear(2, 4))
    mu = torch.tensor([-1.34, -0.45, 0.45, 1.34])  # a balanced batch's standardised levels
    with torch.no_grad():
        net[0].conv.weight.fill_(1 / 3)
        net[0].conv.bias.zero_()
        net[1].weight.zero_()
        net[1].weight[:, 0] = 2 * mu  # logits -(f - mu)^2 + const: the nearest level
        net[1].bias.copy_(-(mu**2))

    def accuracy(mode: str, batches: BnBatches) -> list[float]:
        how = _TestPass(BN_MODES[mode], batches, test_generator(0, 0))
        return [_accuracy(net, images, torch.device("cpu"), how) for _ in range(2)]

    got = accuracy("batch", BnBatches(24, 20))
    g, want = test_generator(0, 0), []
    net.train()  # the reference: never switched to eval mode
    for _ in range(2):  # two passes of a shuffled loader of batch 20
        correct = 0
        for idx in torch.randperm(40, generator=g).split(20):
            with torch.no_grad():
                pred = net(normalize_uint8(images.images[idx])).argmax(1)
            correct += int((pred == images.labels[idx]).sum())
        want.append(correct / 40)
    assert got == want and min(got) > 0.8
    # class-sorted batches of 20 (two classes each) would lose half the classes
    correct = 0
    for idx in torch.arange(40).split(20):
        with torch.no_grad():
            correct += int(
                (net(normalize_uint8(images.images[idx])).argmax(1) == images.labels[idx]).sum()
            )
    assert correct / 40 < 0.6
    # another TEST batch size is another composition
    assert accuracy("batch", BnBatches(24, 5)) != got


def test_adapt_reestimates_batchnorm_as_an_exact_average(levels_root) -> None:
    from tempo_cli.data.labelled import load_split
    from tempo_cli.data.transforms import normalize_uint8
    from tempo_cli.evaluate.batchnorm import (
        BnBatches,
        adapt_batchnorm,
        extract_features,
        test_generator,
    )
    from tempo_cli.evaluate.features import FeatureRecipe, FeatureSource

    net = _LevelNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, test = load_split(levels_root, "train", None), load_split(levels_root, "test", None)
    # one batch per split: the statistics are the mean of the two splits' batch statistics
    g = torch.Generator().manual_seed(0)
    adapted = adapt_batchnorm(net, [(train.images, 32), (test.images, 20)], g)
    with torch.no_grad():
        a = net.conv(normalize_uint8(train.images)).transpose(0, 1).flatten(1)  # (2, N*H*W)
        b = net.conv(normalize_uint8(test.images)).transpose(0, 1).flatten(1)
    bn = adapted.bn
    torch.testing.assert_close(bn.running_mean, (a.mean(1) + b.mean(1)) / 2)
    torch.testing.assert_close(bn.running_var, (a.var(1) + b.var(1)) / 2)  # unbiased
    assert int(bn.num_batches_tracked) == 2 and bn.momentum == 0.1 and not adapted.training
    for k, v in net.state_dict().items():  # the evaluated model is untouched
        assert torch.equal(v, before[k]), k

    # adapt mode: features in eval mode of the adapted copy; the test features depend on
    # the training split the statistics were estimated with (both name the cache entry)
    recipe = FeatureRecipe(None, "adapt", 0, BnBatches(8, 10))
    source = FeatureSource("levels-net", lambda: net, levels_root, recipe)
    tr, te = source.pair("train")
    passes = [(train.images, 8), (test.images, 10)]  # shuffled by run 0's test generator
    adapted = adapt_batchnorm(net, passes, test_generator(0, 0))
    torch.testing.assert_close(tr.features, extract_features(adapted, train.images))
    torch.testing.assert_close(te.features, extract_features(adapted, test.images))
    running, _ = FeatureSource(None, lambda: net, levels_root, FeatureRecipe(None)).pair("train")
    assert not torch.allclose(tr.features, running.features, atol=1e-3)
    warm = FeatureSource("levels-net", lambda: None, levels_root, recipe)  # type: ignore[arg-type, return-value]
    assert all(f.cached for f in warm.pair("train"))
    (levels_root / "test" / "c0" / "0.png").unlink()  # new test images: new statistics
    fresh = FeatureSource("levels-net", lambda: net, levels_root, recipe)
    assert not any(f.cached for f in fresh.pair("train"))


def test_bn_modes_match_the_settings() -> None:
    from typing import get_args

    from tempo_cli.evaluate.batchnorm import BN_MODES, bn_mode
    from tempo_cli.settings.pretrain import PretrainSettings

    for cls in (EvalLinearSettings, PretrainSettings):
        assert set(get_args(cls.model_fields["bn_stats"].annotation)) == set(BN_MODES)
    assert [m for m, mode in BN_MODES.items() if not mode.fine_tunes] == ["adapt"]
    with pytest.raises(ValueError, match="one of running, batch, adapt"):
        bn_mode("frozen")
    s = EvalLinearSettings(path=["random"], bn_batch_size=" 12, 5")
    assert s.bn_batch_size == "12,5" and s.bn_batches() == (12, 5)
    assert EvalLinearSettings(path=["random"]).bn_batches() is None  # auto
    assert ProbeConfig.from_settings(s).bn_batch_size == (12, 5)
    # the core refuses adapt for fine-tuning too (a settings object is not the only way in)
    from tempo_cli.errors import UsageError
    from tempo_cli.evaluate.semisup import finetune_curves

    train, test = _tiny_images(8)
    config = ProbeConfig.default(EvalSemisupSettings, runs=1, iterations=1, bn_stats="adapt")
    with pytest.raises(UsageError, match="semisup takes running or batch"):
        finetune_curves(
            torch.nn.Flatten(), 192, train, test, 2, config, checkpoint="x", samples_pc=1
        )


# --- the probe grid: several lrs in one pass, a validation split, per-run label subsets ---


def _probe_config(**changes: object) -> ProbeConfig:
    base = {"runs": 3, "iterations": 40, "batch_size": 6, "lr": 0.05, "weight_decay": 1e-3}
    return ProbeConfig(**{**base, "seed": 7, "bn_stats": "running", **changes})  # type: ignore[arg-type]


def _assert_same_probe(got, want) -> None:
    """Same curves, heads and selection (tolerance 1e-6)."""
    torch.testing.assert_close(got.accuracy, want.accuracy, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.weight, want.weight, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.bias, want.bias, atol=1e-6, rtol=1e-6)
    assert got.best_run == want.best_run


@pytest.mark.parametrize(
    ("method", "iters", "wd"),
    [("kernel", 300, 1e-3), ("kernel", 60, 0.0), ("primal", 40, 1e-3), ("primal", 30, 0.0)],
)
def test_probe_grid_equals_one_probe_per_lr(method: str, iters: int, wd: float) -> None:
    from tempo_cli.evaluate.linear_probe import train_probe_grid

    # 23 items in batches of 6 (uneven, cycled); 300 kernel steps cross the resync at 250.
    # wd > 0: every lr has its own decay factor 1 - lr * wd; wd = 0: one shared factor.
    c, d = 5, 32
    tr_x, tr_y = _blobs(23, c, d, 1)
    te_x, te_y = _blobs(17, c, d, 2)
    config = _probe_config(iterations=iters, weight_decay=wd)
    lrs = [0.01, 0.05, 0.3]
    grid = train_probe_grid(tr_x, tr_y, te_x, te_y, c, config, lrs, method=method, first_run=2)
    assert [res.lr for res in grid] == lrs
    for lr, res in zip(lrs, grid, strict=True):
        one = train_linear_probes(
            tr_x, tr_y, te_x, te_y, c, replace(config, lr=lr), method=method, first_run=2
        )
        assert res.accuracy.shape == (3, iters + 1) and res.weight.shape == (3, c, d)
        assert one.lr == lr and one.val_accuracy is None and one.selected_on == "test"
        _assert_same_probe(res, one)
    # the lrs really train differently (same batches and init, other step sizes)
    assert not torch.allclose(grid[0].weight, grid[2].weight, atol=1e-3)


@pytest.mark.parametrize("method", ["kernel", "primal"])
def test_probe_val_split_selects_the_run(method: str) -> None:
    from tempo_cli.evaluate.linear_probe import batched_accuracy, pick_best_run, select_lr

    c, d = 4, 8
    tr_x, tr_y = _blobs(16, c, d, 3)
    te_x, te_y = _blobs(40, c, d, 4)
    config = _probe_config(runs=4, iterations=6, batch_size=4, lr=0.2)
    plain = train_linear_probes(tr_x, tr_y, te_x, te_y, c, config, method=method)
    # val labels = the predictions of a run that is NOT the best on test: on val it is right
    # everywhere, so it must be selected (the test curves are not looked at then)
    target = int(plain.accuracy[:, -1].argmin())
    assert target != plain.best_run
    val_x = torch.randn(50, d, generator=torch.Generator().manual_seed(5)) * 3
    val_y = plain.head(target)(val_x).argmax(1)
    res = train_linear_probes(tr_x, tr_y, te_x, te_y, c, config, method=method, val=(val_x, val_y))
    assert res.val_accuracy is not None and res.val_accuracy.shape == (4,)
    torch.testing.assert_close(
        res.val_accuracy, batched_accuracy(val_x, val_y, res.weight, res.bias), atol=1e-6, rtol=0
    )
    assert float(res.val_accuracy[target]) == 1.0
    assert float(res.val_accuracy.sort().values[-2]) < 1.0
    assert res.best_run == target and res.selected_on == "val"
    # val changes only the selection: same curves and heads
    torch.testing.assert_close(res.accuracy, plain.accuracy, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.weight, plain.weight, atol=1e-6, rtol=1e-6)
    # ties on val: the lowest run index
    assert pick_best_run(res.accuracy, torch.tensor([0.5, 0.75, 0.75, 0.25])) == 1
    # select_lr: mean final val accuracy when scored, else mean final test accuracy
    on_val = [replace(res, lr=0.1, val_accuracy=res.val_accuracy * 0 + v) for v in (0.5, 0.7)]
    assert select_lr(on_val) == 1
    assert select_lr([*on_val, replace(on_val[1], lr=1.0)]) == 1  # tie: the earlier lr
    curves = [replace(plain, lr=lr, accuracy=plain.accuracy + a) for lr, a in ((1, 0.1), (2, 0))]
    assert select_lr(curves) == 0


@pytest.mark.parametrize("method", ["kernel", "primal"])
def test_probe_subsets_train_each_run_on_its_own_items(method: str) -> None:
    c, d, n = 5, 16, 30
    tr_x, tr_y = _blobs(n, c, d, 6)
    te_x, te_y = _blobs(20, c, d, 7)
    config = _probe_config(iterations=25, batch_size=4)
    args = (tr_x, tr_y, te_x, te_y, c, config)
    full = train_linear_probes(*args, method=method)
    # every item: the same as no subsets
    same = train_linear_probes(*args, method=method, subsets=[torch.arange(n)] * 3)
    _assert_same_probe(same, full)
    # one subset for every run: the same as training on the materialised subset
    idx = torch.tensor([3, 17, 0, 29, 8, 11, 21, 5, 14, 26, 2, 19])
    sub = train_linear_probes(*args, method=method, subsets=[idx] * 3)
    mat = train_linear_probes(tr_x[idx], tr_y[idx], te_x, te_y, c, config, method=method)
    _assert_same_probe(sub, mat)
    assert not torch.allclose(sub.weight, full.weight, atol=1e-3)
    # a subset per run: run r = a one-run probe (run r's seed) on its own items
    subsets = [torch.randperm(n, generator=torch.Generator().manual_seed(r))[:12] for r in range(3)]
    own = train_linear_probes(*args, method=method, subsets=subsets)
    for r, items in enumerate(subsets):
        one = train_linear_probes(
            tr_x[items],
            tr_y[items],
            te_x,
            te_y,
            c,
            replace(config, runs=1),
            method=method,
            first_run=r,
        )
        torch.testing.assert_close(own.accuracy[r : r + 1], one.accuracy, atol=1e-6, rtol=0)
        torch.testing.assert_close(own.weight[r : r + 1], one.weight, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="subsets"):
        train_linear_probes(*args, subsets=[idx, idx[:5], idx])
