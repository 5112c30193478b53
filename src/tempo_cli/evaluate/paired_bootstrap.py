"""How sure a gain is: one hierarchical paired bootstrap, and Holm's multiplicity rule.

An arm and the baseline are evaluated on the same test images and (with drawn labels)
the same label draws, so their difference is paired. One arm's data at one budget is the
per-image correctness `(S, D, M)`: S pre-training seeds (repeats), D label draws, M test
images, each value the mean over the probe runs that trained on draw d (`ArmData`).

One resample b (of `resamples`, from `numpy.random.default_rng(seed)`, drawn in blocks of
`BLOCK` resamples; in each block, in this order):

1. the arm's pre-training seeds: S_a indices drawn with replacement from its S_a seeds;
2. the baseline's seeds: S_b indices from its S_b seeds (seeds are not paired: arm seed
   k and baseline seed k share nothing);
3. label draws: D indices from the D draws, the same for both arms;
4. test images: M indices from the M images, the same for both arms.

The arm's accuracy on resample b is the mean of correct[s, d, m] over the drawn s, d, m
(each drawn as often as it was drawn); the gain is 100 x (arm - baseline), in points.
The point estimate is the gain on the data as it is; the 95% interval is the 2.5th and
97.5th percentiles of the resampled gains (`numpy.quantile`, linear interpolation).
The two-sided p-value is `min(1, 2 * min(#(gain <= 0) + 1, #(gain >= 0) + 1) / (B + 1))`;
Holm's step-down rule on the p-values of one table calls which gains are distinguishable
from 0 with a family-wise error of 5%.

A factor with a single level (one pre-training, labels not drawn) resamples nothing: the
interval then does not cover that source of variance, and `PairedInterval.sources` says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tempo_cli.errors import TempoError

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05
#: Resamples drawn per block (part of the method: the draws depend on it).
BLOCK = 1_000
METHOD = (
    "hierarchical paired bootstrap (pre-training seeds, then label draws, then test "
    "images, the same indices for both arms; probe runs averaged), {resamples} resamples, "
    "seed {seed}, percentile interval"
)


@dataclass(frozen=True)
class ArmData:
    """One arm at one budget: correct (S, D, M) float, the mean correctness over the probe
    runs of each label draw, per pre-training seed; `test_files` and `draws` identify the
    test images and label draws (two arms are paired only when both are equal)."""

    correct: np.ndarray
    test_files: str
    draws: str
    runs: int  # probe runs per pre-training seed

    @property
    def seeds(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_draws(self) -> int:
        return int(self.correct.shape[1])

    @property
    def images(self) -> int:
        return int(self.correct.shape[2])

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def arm_data(results: Sequence[Any]) -> ArmData:
    """ArmData from the `predictions.ResultPredictions` of one arm at one budget, one per
    pre-training seed (in seed order). TempoError when they are not comparable."""
    if not results:
        raise TempoError("no predictions to compare")
    per_seed, keys = [], set()
    for r in results:
        correct = r.correct().astype(np.float64)  # (R, M)
        run_draw = r.run_draw
        d = int(run_draw.max()) + 1
        per_draw = np.stack([correct[run_draw == k].mean(axis=0) for k in range(d)])
        per_seed.append(per_draw)
        keys.add((r.meta["test_files"], _draws_key(r)))
    if len(keys) != 1 or len({p.shape for p in per_seed}) != 1:
        raise TempoError("the pre-training repeats of one arm were tested on different data")
    test_files, draws = keys.pop()
    return ArmData(np.stack(per_seed), test_files, draws, int(results[0].test_pred.shape[0]))


def _draws_key(r: Any) -> str:
    """The label draws of a result as text: the same text = the same labelled images."""
    labels = r.meta["labels"]
    if r.draws is None:
        return f"{labels['split']}"
    digest = hashlib.sha256(np.ascontiguousarray(r.draws, dtype=np.int64).tobytes()).hexdigest()
    return f"{labels['split']}:{r.draws.shape}:{digest[:16]}"


@dataclass(frozen=True)
class PairedInterval:
    """The arm's gain over the baseline in points, with its interval and what it covers."""

    gain: float
    low: float
    high: float
    p_value: float
    arm_accuracy: float
    baseline_accuracy: float
    resamples: int
    seed: int
    arm_seeds: int
    baseline_seeds: int
    draws: int
    images: int
    runs: int

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    @property
    def sources(self) -> list[str]:
        """Which sources of variance the interval covers, and which not (and why)."""
        seeds = max(self.arm_seeds, self.baseline_seeds)
        out = [
            f"pre-training seeds resampled ({self.arm_seeds} and {self.baseline_seeds})"
            if seeds > 1
            else "pre-training seed not covered: 1 pre-training",
            f"label draws resampled ({self.draws})"
            if self.draws > 1
            else "label draw not covered: one set of labelled images",
            f"test images resampled ({self.images}, paired)",
            f"probe runs averaged ({self.runs})",
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("gain", "low", "high", "arm_accuracy", "baseline_accuracy"):
            out[k] = round(out[k], 6)
        out["p_value"] = round(out["p_value"], 6)
        out["sources"] = self.sources
        return out


def check_paired(arm: ArmData, base: ArmData) -> None:
    """TempoError unless both arms were tested on the same images with the same draws."""
    if arm.test_files != base.test_files or arm.images != base.images:
        raise TempoError("cannot pair the two results: they were tested on different images")
    if arm.draws != base.draws or arm.n_draws != base.n_draws:
        raise TempoError(
            "cannot pair the two results: they trained on different labelled images "
            "(run both with the same --seed and labelled data)"
        )


def resampled_gains(
    arm: ArmData, base: ArmData, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """(resamples,) gains in points, drawn as the module doc says."""
    check_paired(arm, base)
    rng = np.random.default_rng(seed)
    m, d = arm.images, arm.n_draws
    out = np.empty(resamples)
    for lo in range(0, resamples, BLOCK):
        k = min(BLOCK, resamples - lo)
        sa = _counts(rng.integers(0, arm.seeds, size=(k, arm.seeds)), arm.seeds)
        sb = _counts(rng.integers(0, base.seeds, size=(k, base.seeds)), base.seeds)
        dd = _counts(rng.integers(0, d, size=(k, d)), d)
        mm = _counts(rng.integers(0, m, size=(k, m)), m)
        out[lo : lo + k] = 100.0 * (
            _mean(arm.correct, sa, dd, mm) - _mean(base.correct, sb, dd, mm)
        )
    return out


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(k, n) how often each of n items was drawn in each of k resamples (rows of idx)."""
    k = idx.shape[0]
    flat = (idx + n * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)


def _mean(c: np.ndarray, seeds: np.ndarray, draws: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(k,) weighted means of c (S, D, M) with count weights (k, S), (k, D), (k, M)."""
    s, d, m = c.shape
    per = images @ c.reshape(s * d, m).T / m  # (k, S*D)
    per = per.reshape(-1, s, d)
    return np.einsum("ks,kd,ksd->k", seeds / s, draws / d, per)


def paired_interval(
    arm: ArmData, base: ArmData, *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedInterval:
    """The arm's gain over `base` with its LEVEL interval (the module doc's method)."""
    gains = resampled_gains(arm, base, resamples, seed)
    tail = (1.0 - LEVEL) / 2
    low, high = np.quantile(gains, [tail, 1.0 - tail])
    below, above = int((gains <= 0).sum()), int((gains >= 0).sum())
    p = min(1.0, 2.0 * (min(below, above) + 1) / (resamples + 1))
    return PairedInterval(
        gain=100.0 * (arm.accuracy - base.accuracy),
        low=float(low),
        high=float(high),
        p_value=p,
        arm_accuracy=arm.accuracy,
        baseline_accuracy=base.accuracy,
        resamples=resamples,
        seed=seed,
        arm_seeds=arm.seeds,
        baseline_seeds=base.seeds,
        draws=arm.n_draws,
        images=arm.images,
        runs=arm.runs,
    )


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rule: which hypotheses are rejected at family-wise error `alpha`.

    Sort the p-values ascending; reject the i-th smallest (i = 0, 1, ...) while
    p_(i) <= alpha / (n - i); stop at the first that is not.
    """
    n = len(p_values)
    rejected = [False] * n
    for i, j in enumerate(sorted(range(n), key=lambda k: p_values[k])):
        if p_values[j] > alpha / (n - i):
            break
        rejected[j] = True
    return rejected


def method_text(resamples: int = RESAMPLES, seed: int = SEED) -> str:
    return METHOD.format(resamples=f"{resamples:,}", seed=seed)
