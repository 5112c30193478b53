"""The paired bootstrap (evaluate/paired_bootstrap.py), Holm's rule and the verdicts
(evaluate/intervals.py), and the predictions file (evaluate/predictions.py) on planted data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tempo_cli.errors import TempoError
from tempo_cli.evaluate.intervals import Comparison, compare, verdicts
from tempo_cli.evaluate.paired_bootstrap import (
    BLOCK,
    ArmData,
    arm_data,
    holm,
    paired_interval,
    resampled_gains,
)
from tempo_cli.evaluate.predictions import ResultPredictions

M = 200  # test images of the planted case
K = 30  # images the arm gets right and the baseline wrong


def _result(pred: np.ndarray, labels: np.ndarray, run_draw=None, test_files="t", draws=None):
    """A ResultPredictions as read_predictions returns it."""
    r = pred.shape[0]
    meta = {
        "checkpoint": "x",
        "samples_pc": 5,
        "test_files": test_files,
        "labels": {"split": "train-5", "run_draw": list(run_draw or [0] * r), "seed": 0},
    }
    return ResultPredictions(meta, pred, labels, draws=draws)


def _planted() -> tuple[ArmData, ArmData]:
    """Labels all 0; both right on images 100..199, only the arm right on 0..K-1."""
    labels = np.zeros(M, dtype=np.int32)
    base = np.ones((1, M), dtype=np.int32)
    base[0, 100:] = 0
    arm = base.copy()
    arm[0, :K] = 0
    return arm_data([_result(arm, labels)]), arm_data([_result(base, labels)])


def test_planted_case_equals_the_hand_computation() -> None:
    arm, base = _planted()
    iv = paired_interval(arm, base, resamples=4000, seed=7)
    assert iv.gain == pytest.approx(100 * K / M)  # 15 points
    # by hand: one seed and one draw (nothing to resample); the test images are M indices
    # drawn with replacement per resample, in blocks, after the three single-level draws;
    # the gain is the share of drawn images among the K planted ones
    rng = np.random.default_rng(7)
    gains = []
    for lo in range(0, 4000, BLOCK):
        k = min(BLOCK, 4000 - lo)
        for _ in range(3):
            rng.integers(0, 1, size=(k, 1))
        idx = rng.integers(0, M, size=(k, M))
        gains.extend(100.0 * (idx < K).sum(axis=1) / M)
    low, high = np.quantile(gains, [0.025, 0.975])
    assert (iv.low, iv.high) == pytest.approx((low, high), abs=1e-9)
    # and the theory: the gain is 100 * Binomial(M, K/M) / M; its 2.5% / 97.5% quantiles
    from scipy.stats import binom

    exact = 100 * binom.ppf([0.025, 0.975], M, K / M) / M
    assert np.abs(np.array([iv.low, iv.high]) - exact).max() <= 100 / M + 1e-9
    assert iv.p_value == pytest.approx(2 / 4001)  # no resample reaches 0
    assert not iv.covers_zero


def test_identical_arms_are_not_distinguishable() -> None:
    arm, _ = _planted()
    iv = paired_interval(arm, arm, resamples=2000)
    assert (iv.gain, iv.low, iv.high, iv.p_value) == (0.0, 0.0, 0.0, 1.0)
    (c,) = compare([("tempo", 5, arm)], {5: arm}, "random", resamples=2000)
    assert not c.distinguishable
    assert verdicts([c]) == [
        "At 5 labelled images per class, tempo is not distinguishable from random "
        "(+0.0 points, 95% interval 0.0 to 0.0)."
    ]


def test_a_seed_gives_the_same_interval_twice() -> None:
    arm, base = _planted()
    a = paired_interval(arm, base, resamples=3000, seed=3)
    assert paired_interval(arm, base, resamples=3000, seed=3) == a
    assert paired_interval(arm, base, resamples=3000, seed=4) != a


def test_seeds_and_draws_resampled_as_documented() -> None:
    """Two pre-training seeds, three label draws (two runs each): the resampled gains
    equal a plain loop over the documented draws, and the sources say what was covered."""
    rng = np.random.default_rng(0)
    m, runs = 40, 6
    labels = rng.integers(0, 3, size=m).astype(np.int32)
    run_draw = [0, 0, 1, 1, 2, 2]
    draws = np.arange(9).reshape(3, 3)
    arm = [_result(rng.integers(0, 3, (runs, m)), labels, run_draw, draws=draws) for _ in "ab"]
    base = [_result(rng.integers(0, 3, (runs, m)), labels, run_draw, draws=draws)]
    a, b = arm_data(arm), arm_data(base)
    assert a.correct.shape == (2, 3, m) and b.correct.shape == (1, 3, m)
    got = resampled_gains(a, b, resamples=1500, seed=1)
    # by hand: per block, the arm's 2 seed indices, the baseline's 1, 3 draws, m images
    g = np.random.default_rng(1)
    want = []
    for lo in range(0, 1500, BLOCK):
        k = min(BLOCK, 1500 - lo)
        sa, sb = g.integers(0, 2, (k, 2)), g.integers(0, 1, (k, 1))
        dd, mm = g.integers(0, 3, (k, 3)), g.integers(0, m, (k, m))
        for j in range(k):
            acc_a = a.correct[sa[j]][:, dd[j]][:, :, mm[j]].mean()
            acc_b = b.correct[sb[j]][:, dd[j]][:, :, mm[j]].mean()
            want.append(100 * (acc_a - acc_b))
    np.testing.assert_allclose(got, want, atol=1e-9)
    iv = paired_interval(a, b, resamples=1500, seed=1)
    mean_a = np.mean([(r.test_pred == labels).mean() for r in arm])
    assert iv.gain == pytest.approx(100 * (mean_a - (base[0].test_pred == labels).mean()))
    assert iv.sources[:2] == ["pre-training seeds resampled (2 and 1)", "label draws resampled (3)"]


def test_unpaired_results_are_refused() -> None:
    labels = np.zeros(10, dtype=np.int32)
    pred = np.zeros((2, 10), dtype=np.int32)
    a = arm_data([_result(pred, labels, test_files="one")])
    b = arm_data([_result(pred, labels, test_files="two")])
    with pytest.raises(TempoError, match="different images"):
        paired_interval(a, b, resamples=10)
    d1 = arm_data([_result(pred, labels, [0, 1], draws=np.array([[1], [2]]))])
    d2 = arm_data([_result(pred, labels, [0, 1], draws=np.array([[1], [3]]))])
    with pytest.raises(TempoError, match="different labelled images"):
        paired_interval(d1, d2, resamples=10)


def test_holm_steps_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.03 > 0.05 / 2
    assert holm([0.01, 0.02, 0.03]) == [True, True, True]  # 0.0167, 0.025, 0.05
    assert holm([0.2, 0.001]) == [False, True]
    assert holm([]) == []


def test_verdict_sentences_one_per_budget() -> None:
    arm, base = _planted()
    cs = compare(
        [("tempo", 5, arm), ("aug", 5, base), ("tempo", None, arm)],
        {5: base, None: base},
        "random",
        resamples=2000,
    )
    assert [c.distinguishable for c in cs] == [True, False, True]
    lines = verdicts(cs)
    assert len(lines) == 2
    iv = cs[0].interval
    assert lines[0].startswith(
        f"At 5 labelled images per class, tempo is ahead of random by 15.0 points "
        f"(95% interval {iv.low:.1f} to {iv.high:.1f}); aug is not distinguishable from random"
    )
    assert lines[1].startswith("At the full labelled set, tempo is ahead of random by 15.0")
    behind = Comparison("random", "tempo", 1, paired_interval(base, arm, resamples=2000), True)
    assert behind.clause().startswith("random is behind tempo by 15.0 points")


def test_predictions_file_round_trip(tmp_path: Path) -> None:
    """What PredictionsFile writes, read_predictions reads back (no pickle), with the
    label draws and the test split's fingerprint."""
    from PIL import Image

    from tempo_cli.evaluate.predictions import Predictions, PredictionsFile, read_predictions
    from tempo_cli.evaluate.results import CurveResult
    from tempo_cli.evaluate.train_labels import TrainingLabels

    for split in ("test", "train"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (4, 4)).save(tmp_path / split / cls / f"{i}.png")
    test = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    res = CurveResult("linear", "ck", 1, torch.zeros(2, 3), torch.arange(3), lr=0.1)
    res.predictions = Predictions(test, labels, test[:, :2], labels[:2])
    drawn = TrainingLabels("train", 1, (torch.tensor([0, 3]), torch.tensor([2, 5])), True, 4)
    f = PredictionsFile(tmp_path / "p.npz", tmp_path)
    f.add(res, drawn)
    f.add(CurveResult("knn", "ck", 1, torch.zeros(1, 1), torch.arange(1)), drawn)  # none kept
    f.write()
    (tmp_path / "p.npz").rename(tmp_path / "predictions.npz")
    (got,) = read_predictions(tmp_path)
    np.testing.assert_array_equal(got.test_pred, test.numpy())
    np.testing.assert_array_equal(got.val_labels, labels[:2].numpy())
    np.testing.assert_array_equal(got.draws, [[0, 3], [2, 5]])
    assert got.run_draw.tolist() == [0, 1] and got.meta["labels"]["seed"] == 4
    assert got.correct().mean() == pytest.approx(2 / 12)  # run 0 right on 2 of 6
    assert len(got.meta["test_files"]) == 16
    with pytest.raises(TempoError, match="cannot read"):
        read_predictions(tmp_path / "nowhere")


def test_head_predictions_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any block size gives each head's argmax over its logits."""
    import tempo_cli.evaluate.probe_setup as probe_setup
    from tempo_cli.evaluate.predictions import head_predictions

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in ((300, 16), (7, 5, 16), (7, 5)))
    want = (torch.einsum("md,hcd->hmc", x, w) + b[:, None]).argmax(dim=2)
    assert torch.equal(head_predictions(x, w, b), want)
    monkeypatch.setattr(probe_setup, "CHUNK_BYTES", 200)  # blocks of 10 images, 1 head
    assert torch.equal(head_predictions(x, w, b), want)


def _write_folder(folder: Path, root: Path, preds: dict[int, torch.Tensor]) -> Path:
    """An eval run folder's predictions.npz: one checkpoint, one result per budget."""
    from tempo_cli.evaluate.predictions import PREDICTIONS_FILE, Predictions, PredictionsFile
    from tempo_cli.evaluate.results import CurveResult
    from tempo_cli.evaluate.train_labels import TrainingLabels

    f = PredictionsFile(folder / PREDICTIONS_FILE, root)
    for sp, pred in preds.items():
        res = CurveResult("linear", "ck", sp, torch.zeros(len(pred), 2), torch.arange(2))
        res.predictions = Predictions(pred, torch.tensor([0, 0, 0, 1, 1, 1]))
        f.add(res, TrainingLabels(f"train-{sp}", sp))
    f.write()
    return folder


def test_table_from_folders_with_repeats(tmp_path: Path) -> None:
    """A study table recomputed from stage folders: an arm with two pre-training repeats
    against a baseline, each budget; a folder without predictions leaves its arm out."""
    from PIL import Image

    from tempo_cli.evaluate.intervals import table_comparisons

    for cls in ("cat", "dog"):
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (4, 4)).save(tmp_path / "data" / "test" / cls / f"{i}.png")
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)

    def pred() -> torch.Tensor:
        return torch.randint(0, 2, (3, 6), generator=g)

    a = [_write_folder(tmp_path / f"a{k}", root, {1: pred(), 5: pred()}) for k in range(2)]
    b = [_write_folder(tmp_path / "b", root, {1: pred(), 5: pred()})]
    (tmp_path / "empty").mkdir()
    table = table_comparisons({"a": a, "old": [tmp_path / "empty"], "b": b}, "b", resamples=500)
    assert [(c.arm, c.samples_pc) for c in table] == [("a", 1), ("a", 5)]
    from tempo_cli.evaluate.predictions import read_predictions

    for c in table:
        arm = arm_data([read_predictions(d)[[1, 5].index(c.samples_pc)] for d in a])
        base = arm_data([read_predictions(b[0])[[1, 5].index(c.samples_pc)]])
        assert arm.seeds == 2
        assert c.interval == paired_interval(arm, base, resamples=500)
