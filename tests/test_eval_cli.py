"""`tempo eval linear | semisup | knn` end to end on tiny inputs (resnet18, 32 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tempo_cli.data.labelled import ASL_LETTERS

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")
RESULT_KEYS = {
    "checkpoint",
    "samples_pc",
    "runs",
    "accuracy_final_mean",
    "accuracy_final_std",
    "accuracy_best_mean",
}


def _metrics(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "metrics.json").read_text())


@pytest.fixture
def runs_dir() -> Path:
    import os

    return Path(os.environ["TEMPO_RUNS_DIR"])


@pytest.fixture(scope="session")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "r18.pt"
    return save_checkpoint(path, arch="resnet18", backbone=build_resnet("resnet18"))


@pytest.mark.slow
def test_linear_sweep_compare_save_and_cache(
    cli, demo_root: Path, runs_dir: Path, r18_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clf.pt"
    args = (
        "eval",
        "linear",
        "--data",
        str(demo_root),
        "--path",
        "random",
        "--path",
        str(r18_checkpoint),
        "--samples-pc",
        "1,5",
        "--runs",
        "3",
        "--iterations",
        "20",
        "--save-model",
        str(out),
        *TINY,
    )
    res = cli(*args, "--name", "sweep")
    assert res.code == 0, res.err
    m = _metrics(runs_dir, "sweep")
    assert len(m["results"]) == 4
    for rec in m["results"]:
        assert set(rec) >= RESULT_KEYS
        assert rec["runs"] == 3 and 0 <= rec["accuracy_final_mean"] <= 1
    assert [(r["checkpoint"], r["samples_pc"]) for r in m["results"]] == [
        ("random", 1),
        ("random", 5),
        ("r18", 1),
        ("r18", 5),
    ]
    # the table: rows = checkpoints, columns = samples per class, cells mean ± std
    assert "random" in res.out and "r18" in res.out and "±" in res.out
    run = runs_dir / "sweep"
    for f in ("config.json", "curves.png", "accuracy_vs_samples.png"):
        assert (run / f).stat().st_size > 0
    # TensorBoard: <checkpoint>/<samples_pc>/ when comparing, scalar `accuracy` per step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "r18" / "5"))
    ea.Reload()
    assert {"accuracy", "accuracy_std"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("accuracy")] == list(range(21))
    # --save-model: one classifier per result, loadable with its class names
    from tempo_cli.models.checkpoint import load_model

    saved = sorted(Path(p).name for p in m["saved_models"])
    assert saved == ["clf-r18-1.pt", "clf-r18-5.pt", "clf-random-1.pt", "clf-random-5.pt"]
    clf = load_model(tmp_path / "clf-r18-5.pt")
    assert clf.arch == "resnet18" and clf.class_names == list(ASL_LETTERS)
    assert clf.image_size == 32  # the size it was probed at: `--image-size auto` reads it
    assert clf.linear is not None and clf.linear.weight.shape == (24, 512)
    logits = clf.classifier().eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 24)
    # a second run hits the feature cache (no new entries) and reproduces the figures
    import os

    cache = Path(os.environ["TEMPO_CACHE_DIR"]) / "features"
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) >= 6  # 2 checkpoints x (train-1, train-5, test)
    res2 = cli(*args[: -len(TINY) - 2], *TINY, "--name", "warm")
    assert res2.code == 0, res2.err
    assert sorted(cache.glob("*.pt")) == entries
    again = _metrics(runs_dir, "warm")["results"]
    assert [r["accuracy_final_mean"] for r in again] == [
        r["accuracy_final_mean"] for r in m["results"]
    ]


@pytest.mark.slow
def test_save_samples_pc_saves_one_budget_equal_to_its_probe_alone(
    cli, demo_root: Path, r18_checkpoint: Path, tmp_path: Path
) -> None:
    probe = ("--path", str(r18_checkpoint), "--data", str(demo_root), "--runs", "2")
    probe += ("--iterations", "20", "--lr", "0.01,0.1", *TINY)
    swept, alone = tmp_path / "swept.pt", tmp_path / "alone.pt"
    r = cli("eval", "linear", *probe, "--samples-pc", "1,5", "--save-samples-pc", "5",
            "--save-model", str(swept), "--name", "swept")  # fmt: skip
    assert r.code == 0, r.err
    assert sorted(tmp_path.glob("*.pt")) == [swept]  # one budget: no -<checkpoint>-<N> suffix
    r = cli("eval", "linear", *probe, "--samples-pc", "5", "--save-model", str(alone))
    assert r.code == 0, r.err
    a, b = torch.load(swept, weights_only=True), torch.load(alone, weights_only=True)
    assert a["meta"]["samples_pc"] == b["meta"]["samples_pc"] == 5
    assert (a["meta"]["lr"], a["meta"]["best_run"]) == (b["meta"]["lr"], b["meta"]["best_run"])
    for part in ("backbone", "linear"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for bad, why in (("20", "one value of --samples-pc (1,5)"), ("1,5", "one value")):
        r = cli("eval", "linear", *probe, "--samples-pc", "1,5", "--save-samples-pc", bad)
        assert r.code == 2 and "--save-samples-pc" in r.err and why in r.err
        assert len(r.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_single_checkpoint_reference_layout_and_alias(cli, demo_root: Path, runs_dir: Path) -> None:
    res = cli(
        "eval",
        "linear",
        "--data",
        str(demo_root),
        "--path",
        "random",
        "--samples_pc",
        "5",
        "--runs",
        "2",
        "--iterations",
        "5",
        "--bn-stats",
        "batch",
        "--name",
        "one",
        *TINY,
    )
    assert res.code == 0, res.err
    run = runs_dir / "one"
    assert any((run / "5").glob("events.out.tfevents.*"))  # runs/<name>/<samples_pc>
    (rec,) = _metrics(runs_dir, "one")["results"]
    assert rec["samples_pc"] == 5 and rec["bn_stats"] == "batch"
    assert json.loads((run / "config.json").read_text())["samples_pc"] == "5"


def test_invalid_samples_pc_exits_2_naming_splits(cli, demo_root: Path, tmp_path: Path) -> None:
    # a reference layout (train-N folders, no train/): the available N are named
    root = tmp_path / "ref"
    root.mkdir()
    for split in ("train-1", "train-5", "test"):
        (root / split).symlink_to(demo_root / split, target_is_directory=True)
    res = cli("eval", "linear", "--data", str(root), "--path", "random", "--samples-pc", "3")
    assert res.code == 2
    assert "--samples-pc" in res.err and "available: 1, 5" in res.err
    assert "Traceback" not in res.err
    res = cli("eval", "knn", "--data", str(demo_root), "--path", "random", "--samples-pc", "x")
    assert res.code == 2 and "--samples-pc" in res.err
    res = cli("eval", "linear", "--data", str(demo_root))
    assert res.code == 2 and "--path" in res.err


@pytest.mark.slow
def test_semisup_and_knn(cli, demo_root: Path, runs_dir: Path, tmp_path: Path) -> None:
    res = cli(
        "eval",
        "semisup",
        "--data",
        str(demo_root),
        "--path",
        "random",
        "--samples-pc",
        "1",
        "--runs",
        "2",
        "--iterations",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "16",
        "--save-model",
        str(tmp_path / "ft.pt"),
        "--name",
        "ss",
        *TINY,
    )
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "ss")["results"]
    assert set(rec) >= RESULT_KEYS and rec["runs"] == 2 and rec["steps"] == 4
    assert (runs_dir / "ss" / "curves.png").is_file()
    from tempo_cli.models.checkpoint import load_model

    ft = load_model(tmp_path / "ft.pt")
    assert ft.linear is not None and ft.meta["protocol"] == "semisup"

    res = cli(
        "eval",
        "knn",
        "--data",
        str(demo_root),
        "--path",
        "random",
        "--samples-pc",
        "1,5",
        "--k",
        "5",
        "--name",
        "knn",
        *TINY,
    )
    assert res.code == 0, res.err
    recs = _metrics(runs_dir, "knn")["results"]
    assert [r["samples_pc"] for r in recs] == [1, 5]
    assert all(r["runs"] == 1 and r["accuracy_final_std"] == 0 for r in recs)
    assert (runs_dir / "knn" / "accuracy_vs_samples.png").is_file()


@pytest.mark.slow
def test_real_photos_plumbing(cli, asl_sample: Path, tmp_path: Path, runs_dir: Path) -> None:
    """The 120 real photos as both train and test split: 24 letter classes, 5 each."""
    root = tmp_path / "asl"
    root.mkdir()
    (root / "train").symlink_to(asl_sample / "test", target_is_directory=True)
    (root / "test").symlink_to(asl_sample / "test", target_is_directory=True)

    from tempo_cli.evaluate.features import FeatureRecipe, FeatureSource
    from tempo_cli.models.backbones import build_resnet

    torch.manual_seed(0)
    net = build_resnet("resnet18")
    recipe = FeatureRecipe(image_size=32, bn_stats="running", seed=0)
    fs, _ = FeatureSource("test-r18", lambda: net, root, recipe).pair("train")
    assert fs.features.shape == (120, 512) and fs.class_names == list(ASL_LETTERS)
    assert torch.bincount(fs.labels, minlength=24).tolist() == [5] * 24
    # label = position of the folder's letter (K is index 9: no J)
    warm = FeatureSource("test-r18", lambda: None, root, recipe)  # type: ignore[arg-type, return-value]
    assert all(f.cached for f in warm.pair("train"))

    res = cli(
        "eval",
        "linear",
        "--data",
        str(root),
        "--path",
        "random",
        "--runs",
        "2",
        "--iterations",
        "10",
        "--name",
        "real",
        *TINY,
    )
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "real")["results"]
    assert rec["samples_pc"] is None and rec["train_images"] == 120 and rec["test_images"] == 120
    assert any((runs_dir / "real" / "None").glob("events.out.tfevents.*"))
    assert (runs_dir / "real" / "curves.png").is_file()


@pytest.mark.slow
def test_image_size_auto_follows_the_checkpoint(
    cli, demo_root: Path, runs_dir: Path, tmp_path: Path
) -> None:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ck = save_checkpoint(
        tmp_path / "at40.pt", arch="resnet18", backbone=build_resnet("resnet18"), image_size=40
    )
    common = ("eval", "knn", "--data", str(demo_root), "--samples-pc", "1", "--device", "cpu")
    res = cli(*common, "--path", str(ck), "--name", "auto")
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "auto")["results"]
    assert rec["image_size"] == 40 and "warning" not in res.err
    # `random`, `imagenet` and reference files record nothing: the reference's 128 px
    from tempo_cli.evaluate.checkpoints import Checkpoint

    assert Checkpoint("random", "resnet18", 0).recorded_image_size is None
    res = cli(*common, "--path", str(ck), "--image-size", "32", "--name", "explicit")
    assert res.code == 0, res.err
    assert [r["image_size"] for r in _metrics(runs_dir, "explicit")["results"]] == [32]
    (line,) = [ln for ln in res.err.splitlines() if "warning" in ln]
    assert "--image-size 32" in line and "40" in line


@pytest.mark.slow
def test_bn_stats_adapt_and_batch_sizes(cli, demo_root: Path, runs_dir: Path) -> None:
    common = ("--data", str(demo_root), "--path", "random", "--samples-pc", "1", *TINY)
    res = cli("eval", "knn", *common, "--bn-stats", "adapt", "--name", "knn-adapt")
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "knn-adapt")["results"]
    assert rec["bn_stats"] == "adapt" and rec["bn_batch_size"] == [24, 10]
    lin = ("eval", "linear", *common, "--runs", "2", "--iterations", "5")
    res = cli(*lin, "--bn-stats", "adapt", "--bn-batch-size", "16,8", "--name", "lin-adapt")
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "lin-adapt")["results"]
    assert rec["bn_stats"] == "adapt" and rec["bn_batch_size"] == [16, 8]
    config = json.loads((runs_dir / "lin-adapt" / "config.json").read_text())
    assert config["bn_batch_size"] == "16,8"
    res = cli(*lin, "--bn-stats", "batch", "--batch-size", "12", "--name", "lin-batch")
    assert res.code == 0, res.err
    (rec,) = _metrics(runs_dir, "lin-batch")["results"]
    assert rec["bn_batch_size"] == [12, 10]  # auto: the probe's --batch-size, test 10
    res = cli(*lin, "--name", "lin-running")
    assert "bn_batch_size" not in _metrics(runs_dir, "lin-running")["results"][0]

    # semisup trains BatchNorm itself: adapt is refused, naming the protocols that take it
    res = cli("eval", "semisup", *common, "--bn-stats", "adapt")
    assert res.code == 2 and "Traceback" not in res.err
    assert "--bn-stats" in res.err and "eval linear, eval knn and pretrain --eval" in res.err
    for bad in ("0,10", "24", "a,b", "24,10,5"):
        res = cli("eval", "linear", *common, "--bn-batch-size", bad)
        assert res.code == 2 and "--bn-batch-size" in res.err and "TRAIN,TEST" in res.err, bad


@pytest.mark.slow
def test_pretrain_eval_takes_bn_stats(demo_root: Path, tmp_path: Path) -> None:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.models.projection_head import ProjectionHead
    from tempo_cli.pretrain.final import FinalModel
    from tempo_cli.settings.pretrain import PretrainSettings

    torch.manual_seed(0)
    final = FinalModel("resnet18", build_resnet("resnet18"), ProjectionHead(512, 32, 32), 32, {})
    path = tmp_path / "m.pt"
    final.save(path)
    records = {}
    for mode in ("running", "adapt"):
        s = PretrainSettings(bn_stats=mode, seed=0)
        records[mode] = final.evaluate_and_save(path, demo_root, s, torch.device("cpu"), True)
    assert records["adapt"]["bn_stats"] == "adapt" and records["adapt"]["bn_batch_size"] == [10, 10]
    assert records["running"]["bn_stats"] == "running"
    assert records["adapt"]["accuracy_final_mean"] != records["running"]["accuracy_final_mean"]
    assert load_model(path).linear is not None
