"""`tempo eval` keeps per-image predictions, and with several `--path` prints each one's
paired interval against the first: recomputed from the run folder alone, the same."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from tempo_cli.evaluate.intervals import run_comparisons
from tempo_cli.evaluate.predictions import read_predictions

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")
LINE = re.compile(
    r"^  (\S+) - (\S+) at (.+?): ([+-]\d+\.\d) points \(95% interval (-?\d+\.\d) to "
    r"(-?\d+\.\d), p = (\d\.\d{4})\): (not distinguishable|distinguishable)$",
    re.M,
)


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny checkpoint as test_eval_cli's (its features are cached once)."""
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "r18.pt"
    return save_checkpoint(path, arch="resnet18", backbone=build_resnet("resnet18"))


def _run(name: str) -> tuple[Path, dict]:
    run = Path(os.environ["TEMPO_RUNS_DIR"]) / name
    return run, json.loads((run / "metrics.json").read_text())


def _check_kept(run: Path, metrics: dict) -> None:
    """predictions.npz holds every result, and its runs' accuracies are the metrics'."""
    kept = read_predictions(run)
    assert len(kept) == len(metrics["results"])
    for rec, res in zip(metrics["results"], kept, strict=True):
        assert (res.checkpoint, res.samples_pc) == (rec["checkpoint"], rec["samples_pc"])
        assert res.test_pred.shape == (rec["runs"], 480)
        acc = res.correct().mean(axis=1)
        assert acc.mean() == pytest.approx(rec["accuracy_final_mean"], abs=2e-6)
        if "val_accuracy_final_mean" in rec:
            val = (res.val_pred == res.val_labels).mean(axis=1)
            assert val.mean() == pytest.approx(rec["val_accuracy_final_mean"], abs=2e-6)


def _check_printed(out: str, run: Path, metrics: dict, pairs: int) -> None:
    """The printed lines and metrics.json equal a recomputation from the folder alone."""
    again = run_comparisons(run)
    assert [c.to_dict() for c in again] == metrics["paired_intervals"]
    printed = LINE.findall(out)
    assert len(printed) == len(again) == pairs
    for line, c in zip(printed, again, strict=True):
        iv = c.interval
        assert line[:2] == (c.arm, c.baseline)
        assert line[3:6] == (f"{iv.gain:+.1f}", f"{iv.low:.1f}", f"{iv.high:.1f}")
        assert line[6] == f"{iv.p_value:.4f}"
        assert (line[7] == "distinguishable") == c.distinguishable
    for sentence in metrics["verdicts"]:
        assert sentence in out
    assert "Holm-corrected" in metrics["interval_method"]


@pytest.mark.slow
def test_linear_and_knn_intervals_recompute_from_the_run_folder(
    cli, demo_root: Path, r18: Path
) -> None:
    common = ("--data", demo_root, "--path", "random", "--path", r18, *TINY)
    res = cli(
        "eval", "linear", *common, "--samples-pc", "1,5", "--runs", "4", "--iterations", "20",
        "--resample-labels", "--name", "lin",
    )  # fmt: skip
    assert res.code == 0, res.err
    run, m = _run("lin")
    _check_kept(run, m)
    kept = read_predictions(run)
    assert kept[0].draws is not None and kept[0].draws.shape == (4, 24)  # 1 per class x 4
    assert kept[0].run_draw.tolist() == [0, 1, 2, 3]
    _check_printed(res.out, run, m, pairs=2)
    assert "label draws resampled (4)" in m["interval_method"]
    assert "pre-training seed not covered: 1 pre-training" in m["interval_method"]

    res = cli("eval", "knn", *common, "--samples-pc", "5", "--k", "5", "--name", "knn")
    assert res.code == 0, res.err
    run, m = _run("knn")
    _check_kept(run, m)
    _check_printed(res.out, run, m, pairs=1)
    assert "label draw not covered" in m["interval_method"]


@pytest.mark.slow
def test_semisup_keeps_each_runs_predictions_in_image_order() -> None:
    """Fine-tuning keeps every run's final test and val predictions, in the images' order
    even when batch mode scores them in shuffled batches: they give its final accuracies."""
    from tempo_cli.evaluate.config import ProbeConfig
    from tempo_cli.evaluate.semisup import Images, finetune_curves
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.settings.evaluate import EvalSemisupSettings

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(60) % 3
    split = [Images(images[i::3], labels[i::3]) for i in range(3)]  # train, test, val
    config = ProbeConfig.default(
        EvalSemisupSettings,
        runs=2,
        iterations=2,
        batch_size=8,
        bn_stats="batch",
    )
    torch.manual_seed(0)
    res = finetune_curves(
        build_resnet("resnet18"), 512, split[0], split[1], 3, config,
        checkpoint="r18", samples_pc=None, val=split[2],
    )  # fmt: skip
    p = res.predictions
    assert p is not None and p.test.shape == (2, 20) and p.val is not None
    assert torch.equal(p.test_labels, split[1].labels)
    share = (p.test == p.test_labels).double().mean(dim=1)
    torch.testing.assert_close(share.float(), res.accuracy[:, -1])
    assert res.val_accuracy is not None
    val = (p.val == split[2].labels).double().mean(dim=1)
    torch.testing.assert_close(val.float(), res.val_accuracy)
