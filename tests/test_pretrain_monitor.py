"""`tempo pretrain --monitor`: kNN and label-free signals per epoch, `--keep best`.

Tiny runs: resnet18 at 32 px on 48 frames beside a small labelled root (3 classes,
train-2/, test/, val/); the demo test (slow) checks the monitor against `tempo eval knn`.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tempo_cli.settings import load_settings
from tempo_cli.settings.pretrain import PretrainSettings

CLASSES = ("a", "b", "c")


def write_root(root: Path, n_frames: int = 48, size: int = 32) -> Path:
    """frames/ (a tiny smooth 'video') and labelled train-2/, test/, val/ of 3 colours."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "frames").mkdir(parents=True)
    base = rng.random((size, size, 3))
    for i in range(n_frames):
        img = 255 * (0.7 * np.roll(base, i, axis=1) + 0.3 * rng.random((size, size, 3)))
        Image.fromarray(img.astype(np.uint8)).save(root / "frames" / f"{i:04d}.png")
    for split, n in (("train-2", 2), ("test", 3), ("val", 2)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 220, (size, size, 3)) + 15 * k  # hard: scores vary
                Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_root(tmp_path_factory.mktemp("monitor") / "ds")


def tiny(data: Path | str, **over: Any) -> PretrainSettings:
    values: dict[str, Any] = {
        "data": str(data),
        "backbone": "resnet18",
        "init": "random",
        "image_size": 32,
        "batch_size": 16,
        "epochs": 2,
        "optimizer": "adamw",
        "lr": 1e-3,
        "proximity": 3,
        "quiet": True,
        "device": "cpu",
        "name": "t",
        "monitor_samples_pc": 2,
        "monitor_budget": 1.0,  # tiny data: every epoch measured (the default is 5%)
    }
    values.update(over)
    return load_settings(PretrainSettings, values)


def _monitor_of(root: Path, **over: Any):
    """(Monitor, twin) of a fresh random resnet18 on `root`'s frames."""
    from tempo_cli.data.sequences import load_frame_store
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.pretrain.monitor import Monitor, plan_monitor
    from tempo_cli.pretrain.step import TwinModel

    s = tiny(root, **over)
    torch.manual_seed(0)
    twin = TwinModel(build_resnet("resnet18", "random"), head_for("resnet18")).train()
    store = load_frame_store(root / "frames", 32, quiet=True)
    plan = plan_monitor(s, root / "frames")
    return Monitor(plan, s, twin, store, torch.device("cpu")), twin


def test_rankme_high_untrained_one_when_constant_and_collapse_warns(root: Path) -> None:
    from tempo_cli.pretrain.label_free import collapse_warning, feature_std, rankme

    monitor, twin = _monitor_of(root, monitor="none")
    record, warnings = monitor.measure()
    assert record["rankme"] > 10 and record["rankme_projector"] > 10, record
    assert record["std"] > 1e-3 and warnings == []
    assert record["bt_on_diag"] > 0 and record["bt_off_diag"] > 0
    with torch.no_grad():
        twin.backbone.conv1.weight.zero_()  # the input no longer reaches the output
    record, warnings = monitor.measure()
    assert record["rankme"] == pytest.approx(1.0, abs=0.05)
    assert record["std"] < 1e-6
    assert any("backbone features look collapsed" in w for w in warnings)
    # the pure functions: full rank vs one direction
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    assert rankme(x) > 50 and rankme(torch.ones(256, 64)) == pytest.approx(1.0, abs=1e-3)
    assert feature_std(torch.ones(256, 64)) == 0.0
    assert collapse_warning(rankme(x), feature_std(x), 256, 64, "backbone") is None


def test_monitor_leaves_weights_buffers_modes_and_rngs_untouched(root: Path) -> None:
    monitor, twin = _monitor_of(root, monitor="knn")
    twin(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))  # some BatchNorm history
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    modes = [m.training for m in twin.modules()]
    rngs = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    record, _ = monitor.measure()
    assert 0.0 <= record["knn"] <= 1.0 and 0.0 <= record["knn_val"] <= 1.0
    after = twin.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # num_batches_tracked too
    assert [m.training for m in twin.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rngs[0]) and random.getstate() == rngs[1]
    assert np.array_equal(np.random.get_state()[1], rngs[2])
    again, _ = monitor.measure()  # same weights -> same numbers (no stale cache either)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in record.items() if k != "seconds"
    }


def test_linear_monitor_is_the_reduced_batched_probe(root: Path) -> None:
    from tempo_cli.pretrain.monitor import LINEAR_ITERATIONS, LINEAR_RUNS

    assert (LINEAR_RUNS, LINEAR_ITERATIONS) == (1, 300)
    monitor, _ = _monitor_of(root, monitor="linear")
    record, _ = monitor.measure()
    assert 0.0 <= record["linear"] <= 1.0 and 0.0 <= record["linear_val"] <= 1.0
    assert monitor.score(record) == record["linear_val"]


def test_monitor_auto_and_usage_errors(cli, root: Path, tmp_path: Path) -> None:
    from tempo_cli.pretrain.monitor import plan_monitor

    plan = plan_monitor(tiny(root), root / "frames")
    assert (plan.kind, plan.root, plan.selected_on) == ("knn", root, "val")
    plan = plan_monitor(tiny(root / "frames"), root / "frames")  # frames/ -> its parent
    assert plan.kind == "knn"
    bare = tmp_path / "bare"
    bare.mkdir()
    plan = plan_monitor(tiny(root, monitor_data=str(bare)), root / "frames")
    assert (plan.kind, plan.selected_on) == ("none", "rankme")
    r = cli(
        "pretrain", "--data", root / "frames", "--monitor", "knn", "--monitor-data", bare,
        "--init", "random", "--backbone", "resnet18", "--image-size", "32",
    )  # fmt: skip
    assert r.code == 2 and "--monitor-data" in r.err
    r = cli("pretrain", "--data", root, "--monitor", "cosine")
    assert r.code == 2 and "--monitor" in r.err
    # more labelled images per class than the monitor data has: named as our option
    r = cli(
        "pretrain", "--data", root / "frames", "--monitor", "knn", "--monitor-samples-pc",
        "10000", "--init", "random", "--backbone", "resnet18", "--image-size", "32",
    )  # fmt: skip
    assert r.code == 2 and "--monitor-samples-pc" in r.err and "Traceback" not in r.err


def _weights(result) -> dict[str, torch.Tensor]:
    state = {f"b.{k}": v for k, v in result.backbone.state_dict().items()}
    state.update({f"h.{k}": v for k, v in result.head.state_dict().items()})
    return state


@pytest.mark.slow
def test_monitoring_never_changes_training_and_keeps_best(root: Path) -> None:
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import train

    watched = train(tiny(root, name="knn", monitor="knn", monitor_every=2, keep="best"))
    plain = train(tiny(root, name="none", monitor="none"))
    m = watched.metrics
    assert [e["loss"] for e in m["epochs"]] == [e["loss"] for e in plain.metrics["epochs"]]
    a, b = _weights(watched), _weights(plain)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m["monitor"]["kind"] == "knn" and m["monitor"]["selected_on"] == "val"
    for e in m["epochs"]:
        assert {"knn", "knn_val", "rankme", "rankme_projector", "std", "bt_on_diag"} <= set(
            e["monitor"]
        )
    assert [r["step"] for r in m["monitor_steps"]] == [2, 4]  # 3 steps per epoch, not 3 or 6
    best = m["best"]
    assert best["selected_on"] == "val" and best["metric"] == "knn_val"
    scores = [e["monitor"]["knn_val"] for e in m["epochs"]]
    assert best["score"] == max(scores) and best["epoch"] == 1 + scores.index(max(scores))
    saved = load_model(best["checkpoint"])
    assert saved.head is not None and saved.image_size == 32
    assert "rankme" in {e for e in plain.metrics["epochs"][0]["monitor"]}
    assert "best" not in plain.metrics and not (plain.run_dir / "best.pt").exists()
    events = list((watched.run_dir).rglob("events.out.tfevents*"))
    assert events, "TensorBoard log"


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_best_epoch(root: Path, cli) -> None:
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.pretrain import run

    over = {"epochs": 3, "keep": "best", "monitor_every": None}
    full = run(tiny(root, name="full", **over))
    part = run(tiny(root, name="part", max_steps=4, **over))  # stops inside epoch 2
    assert len([e for e in part["epochs"] if not e.get("partial")]) == 1
    resumed = run(tiny(root, name="part", resume=part["last"], **over))
    assert resumed["best"]["epoch"] == full["best"]["epoch"]
    assert resumed["best"]["score"] == full["best"]["score"]

    def records(m: dict[str, Any]) -> list[dict[str, float]]:
        return [{k: v for k, v in e["monitor"].items() if k != "seconds"} for e in m["epochs"]]

    assert records(resumed) == records(full)
    w_full, w_res = (
        load_model(full["best"]["checkpoint"]),
        load_model(resumed["best"]["checkpoint"]),
    )
    sa, sb = w_full.backbone.state_dict(), w_res.backbone.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    r = cli(
        "eval", "knn", "--path", resumed["best"]["checkpoint"], "--data", root,
        "--samples-pc", "2", "--device", "cpu", "--name", "ev", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    # best.pt is a product checkpoint all the way to `tempo explain`: a classifier on it
    # (eval linear --save-model) explains the test images.
    classifier = Path(os.environ["TEMPO_RUNS_DIR"]) / "best-classifier.pt"
    r = cli(
        "eval", "linear", "--path", resumed["best"]["checkpoint"], "--data", root,
        "--samples-pc", "2", "--runs", "1", "--iterations", "20", "--save-model", classifier,
        "--device", "cpu", "--name", "ev-linear", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    r = cli(
        "explain", "lrp", "--path", classifier, "--data", root, "--no-sheets", "--device",
        "cpu", "--name", "ex", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    explained = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "ex" / "metrics.json").read_text())
    assert explained["images"] == 9 and explained["heatmaps"] >= 9
    assert explained["image_size"] == 32  # the size best.pt records, through the classifier


@pytest.mark.slow
def test_demo_knn_rises_and_equals_tempo_eval_knn(cli, demo_root: Path) -> None:
    r = cli(
        "pretrain", "--data", "demo", "--backbone", "resnet18", "--init", "random",
        "--image-size", "32", "--batch-size", "64", "--optimizer", "adamw", "--lr", "0.001",
        "--l", "0.005", "--proximity", "5", "--epochs", "4", "--device", "cpu",
        "--keep", "best", "--name", "mon", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    metrics = json.loads((runs / "mon" / "metrics.json").read_text())
    knn = [e["monitor"]["knn"] for e in metrics["epochs"]]
    print("monitor knn per epoch:", knn, "best:", metrics["best"])
    assert knn[-1] > knn[0], knn
    best = metrics["best"]
    assert best["selected_on"] == "val"

    def eval_knn(path: str, name: str) -> float:
        r = cli(
            "eval", "knn", "--path", path, "--data", "demo", "--samples-pc", "5",
            "--device", "cpu", "--name", name, "--quiet",
        )  # fmt: skip
        assert r.code == 0, r.err
        res = json.loads((runs / name / "metrics.json").read_text())["results"]
        return float(res[0]["accuracy_final_mean"])

    assert eval_knn(metrics["checkpoint"], "ev-final") == pytest.approx(knn[-1], abs=1e-6)
    at_best = metrics["epochs"][best["epoch"] - 1]["monitor"]["knn"]
    assert eval_knn(best["checkpoint"], "ev-best") == pytest.approx(at_best, abs=1e-6)


def _ddp_worker(rank: int, port: int, data: str, out: str) -> None:
    import torch.distributed as dist

    from tempo_cli.pretrain import train

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        TEMPO_RUNS_DIR=str(Path(out) / f"runs{rank}"),
    )  # fmt: skip
    torch.set_num_threads(1)
    result = train(tiny(data, name="ddp", batch_size=8, keep="best"))
    assert not dist.is_initialized()
    torch.save(_weights(result), Path(out) / f"weights{rank}.pt")


@pytest.mark.slow
def test_two_processes_rank0_monitors_and_weights_stay_equal(root: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mp.spawn(_ddp_worker, args=(port, str(root), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    run0 = tmp_path / "runs0" / "ddp"
    metrics = json.loads((run0 / "metrics.json").read_text())
    assert all("knn" in e["monitor"] for e in metrics["epochs"])
    assert (run0 / "best.pt").is_file() and metrics["best"]["epoch"] >= 1
    assert not (tmp_path / "runs1").exists() or not any((tmp_path / "runs1").rglob("*"))


def test_budget_sizes_the_sample_and_interval_from_the_data() -> None:
    from tempo_cli.pretrain.monitor_budget import MAX_PAIRS, MIN_PAIRS, TRAIN_COST, size_monitor

    def share_ok(size, pairs_per_epoch: int, epochs: int, labelled: int) -> float:
        passes = sum(size.measures(e, epochs) for e in range(1, epochs + 1))
        return passes * (2 * size.pairs + labelled) / (TRAIN_COST * pairs_per_epoch * epochs)

    # the demo (3840 frames, 4 epochs; train-5 + test + val = 840 images): every epoch
    demo = size_monitor(pairs_per_epoch=3840, epochs=4, labelled_images=840, budget=0.05)
    assert demo.labelled and demo.every == 1 and MIN_PAIRS <= demo.pairs < MAX_PAIRS
    assert demo.share == pytest.approx(share_ok(demo, 3840, 4, 840)) and demo.share <= 0.05
    # a 512-frame clip without labels: a smaller sample, still every epoch, under 5%
    clip = size_monitor(pairs_per_epoch=512, epochs=1, labelled_images=0, budget=0.05)
    assert not clip.labelled and clip.every == 1 and clip.share <= 0.05
    assert clip.pairs < MAX_PAIRS
    # plenty of frames: the full sample
    big = size_monitor(pairs_per_epoch=100_000, epochs=2, labelled_images=840, budget=0.05)
    assert big.pairs == MAX_PAIRS and big.every == 1
    # labelled images weigh more than one epoch allows: measured every k epochs and the last
    sparse = size_monitor(pairs_per_epoch=3840, epochs=10, labelled_images=2000, budget=0.05)
    assert sparse.labelled and sparse.every > 1 and sparse.share <= 0.05
    assert sparse.measures(10, 10) and not sparse.measures(1, 10)
    # one epoch: the labelled pass does not fit -> auto keeps the label-free signals only
    one = size_monitor(pairs_per_epoch=3840, epochs=1, labelled_images=2000, budget=0.05)
    assert not one.labelled and one.every == 1 and one.share <= 0.05
    # ... unless asked for (explicit --monitor knn): once, at the last epoch
    asked = size_monitor(
        pairs_per_epoch=3840, epochs=3, labelled_images=9000, budget=0.05, insist=True
    )
    assert asked.labelled and asked.every == 3 and asked.share > 0.05
    # nothing fits (48 frames): no pass at all
    none = size_monitor(pairs_per_epoch=48, epochs=2, labelled_images=21, budget=0.05)
    assert none.every == 0 and not none.measures(2, 2) and none.share == 0


def test_default_budget_on_tiny_data_is_said_and_recorded(root: Path) -> None:
    from tempo_cli.data.sequences import load_frame_store
    from tempo_cli.pretrain.monitor_plan import size_line, sized_plan

    store = load_frame_store(root / "frames", 32, quiet=True)
    s = tiny(root, monitor_budget=0.05)  # the default: 48 frames are too few for any pass
    plan, size = sized_plan(s, root / "frames", store)
    assert plan.kind == "none" and plan.dropped == "knn" and size.every == 0
    assert "over the budget" in plan.line() and "--monitor-budget 0.05" in size_line(size, s)
    s = tiny(root, monitor="knn", monitor_budget=0.05)  # asked for: once, at the last epoch
    plan, size = sized_plan(s, root / "frames", store)
    assert plan.kind == "knn" and size.every == s.epochs and size.labelled
    s = tiny(root, monitor_budget=0.5, epochs=6)
    plan, size = sized_plan(s, root / "frames", store)
    assert plan.kind == "knn" and size.share <= 0.5
    assert "label-free pairs" in size_line(size, s)
