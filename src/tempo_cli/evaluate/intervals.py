"""Paired intervals of a table of comparisons, their Holm calls, and verdicts in words.

A table is every (arm, budget) against the baseline at that budget (one eval run's
checkpoints against the first `--path`; a study's arms against its baseline). Each gain
gets its interval from `paired_bootstrap.paired_interval`; the "distinguishable" call is
Holm's over the whole table. `verdicts` says the outcome, one sentence per budget:

    "At 5 labelled images per class, tempo is ahead of random by 31.0 points (95% interval
    27.0 to 35.0)."
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli.errors import TempoError
from tempo_cli.evaluate.paired_bootstrap import (
    RESAMPLES,
    SEED,
    ArmData,
    PairedInterval,
    arm_data,
    check_paired,
    holm,
    method_text,
    paired_interval,
)
from tempo_cli.evaluate.predictions import find_result, read_predictions

if TYPE_CHECKING:
    from tempo_cli.report.run_dir import RunDir


@dataclass(frozen=True)
class Comparison:
    """One arm against the baseline at one budget (samples per class; None = full)."""

    arm: str
    baseline: str
    samples_pc: int | None
    interval: PairedInterval
    distinguishable: bool

    def clause(self) -> str:
        """e.g. "tempo is ahead of random by 31.0 points (95% interval 27.0 to 35.0)"."""
        iv = self.interval
        bounds = f"95% interval {iv.low:.1f} to {iv.high:.1f}"
        if not self.distinguishable:
            gain = f"{iv.gain:+.1f} points, {bounds}"
            return f"{self.arm} is not distinguishable from {self.baseline} ({gain})"
        side = "ahead of" if iv.gain > 0 else "behind"
        return f"{self.arm} is {side} {self.baseline} by {abs(iv.gain):.1f} points ({bounds})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "baseline": self.baseline,
            "samples_pc": self.samples_pc,
            **self.interval.to_dict(),
            "distinguishable": self.distinguishable,
        }


def budget_text(samples_pc: int | None) -> str:
    """ "5 labelled images per class", "1 labelled image per class", "the full labelled set"."""
    if samples_pc is None:
        return "the full labelled set"
    return f"{samples_pc} labelled image{'' if samples_pc == 1 else 's'} per class"


def compare(
    cells: Sequence[tuple[str, int | None, ArmData]],
    baselines: dict[int | None, ArmData],
    baseline: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[Comparison]:
    """Each (arm, samples_pc, data) of `cells` against `baselines[samples_pc]`; Holm's
    call over all of them. Cells whose budget has no baseline are left out."""
    kept = [(a, sp, d) for a, sp, d in cells if sp in baselines]
    intervals = [
        paired_interval(d, baselines[sp], resamples=resamples, seed=seed) for _, sp, d in kept
    ]
    calls = holm([iv.p_value for iv in intervals])
    return [
        Comparison(a, baseline, sp, iv, call)
        for (a, sp, _), iv, call in zip(kept, intervals, calls, strict=True)
    ]


def verdicts(comparisons: Sequence[Comparison]) -> list[str]:
    """One sentence per budget (in the order budgets first appear), arms joined by ";"."""
    budgets: dict[int | None, list[Comparison]] = {}
    for c in comparisons:
        budgets.setdefault(c.samples_pc, []).append(c)
    return [
        f"At {budget_text(sp)}, " + "; ".join(c.clause() for c in cs) + "."
        for sp, cs in budgets.items()
    ]


def method_note(comparisons: Sequence[Comparison]) -> str:
    """What the intervals are, which sources they cover and the multiplicity rule."""
    if not comparisons:
        return ""
    first = comparisons[0].interval
    sources = {s for c in comparisons for s in c.interval.sources}
    ordered = [s for s in first.sources if s in sources] + sorted(sources - set(first.sources))
    return (
        f"Gains in points with 95% intervals: {method_text(first.resamples, first.seed)}; "
        f'{"; ".join(ordered)}. "Distinguishable" is Holm-corrected over the '
        f"{len(comparisons)} comparison{'s' if len(comparisons) != 1 else ''} of the table."
    )


def run_comparisons(
    run_dir: str | Path, *, resamples: int = RESAMPLES, seed: int = SEED
) -> list[Comparison]:
    """Every other checkpoint of an eval run folder against its first, at every budget,
    recomputed from the folder's predictions.npz alone (the selected lr of a grid)."""
    results = read_predictions(run_dir)
    names = list(dict.fromkeys(r.checkpoint for r in results))
    budgets = list(dict.fromkeys(r.samples_pc for r in results))
    if len(names) < 2:
        return []
    first, cells, baselines = names[0], [], {}
    for sp in budgets:
        base = find_result(results, first, sp)
        if base is None:
            continue
        baselines[sp] = arm_data([base])
        for name in names[1:]:
            found = find_result(results, name, sp)
            if found is not None:
                cells.append((name, sp, arm_data([found])))
    return compare(cells, baselines, first, resamples=resamples, seed=seed)


def record_comparisons(run: RunDir) -> list[Comparison]:
    """`tempo eval` with several `--path`: every checkpoint against the first, recomputed
    from the run folder's predictions.npz, kept in metrics.json (`paired_intervals`,
    `verdicts`, `interval_method`). Nothing with a single checkpoint."""
    comparisons = run_comparisons(run.path)
    if comparisons:
        run.update_metrics(
            paired_intervals=[c.to_dict() for c in comparisons],
            verdicts=verdicts(comparisons),
            interval_method=method_note(comparisons),
        )
    return comparisons


def print_comparisons(comparisons: Sequence[Comparison]) -> None:
    """The verdicts, then one line per comparison, and the method (stdout)."""
    if not comparisons:
        return
    from rich.console import Console

    console = Console(soft_wrap=True, highlight=False)
    for sentence in verdicts(comparisons):
        console.print(sentence)
    for c in comparisons:
        iv, call = c.interval, "distinguishable" if c.distinguishable else "not distinguishable"
        console.print(
            f"  {c.arm} - {c.baseline} at {budget_text(c.samples_pc)}: {iv.gain:+.1f} points "
            f"(95% interval {iv.low:.1f} to {iv.high:.1f}, p = {iv.p_value:.4f}): {call}"
        )
    console.print(method_note(comparisons))


def table_comparisons(
    arms: dict[str, list[Path]],
    baseline: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[Comparison]:
    """A study table: each arm's stage folders (one per pre-training repeat, each one
    checkpoint) against the baseline's, at every budget all of them have, recomputed from
    their predictions.npz. An arm whose folders keep no (or no comparable) predictions is
    left out: the table itself still stands."""
    loaded = {}
    for arm, dirs in arms.items():
        try:
            loaded[arm] = [read_predictions(d) for d in dirs]
        except TempoError:
            continue
    if baseline not in loaded:
        return []
    budgets = list(dict.fromkeys(r.samples_pc for rs in loaded[baseline] for r in rs))
    cells, bases = [], {}
    for sp in budgets:
        base = _arm_at(loaded[baseline], sp)
        if base is None:
            continue
        bases[sp] = base
        for arm, runs in loaded.items():
            data = _arm_at(runs, sp) if arm != baseline else None
            if data is not None and _paired(data, base):
                cells.append((arm, sp, data))
    return compare(cells, bases, baseline, resamples=resamples, seed=seed)


def _arm_at(runs: list[list[Any]], samples_pc: int | None) -> ArmData | None:
    """One arm's data at one budget over its repeats (None: a repeat lacks it)."""
    found = [find_result(results, None, samples_pc) for results in runs]
    if not found or any(f is None for f in found):
        return None
    try:
        return arm_data(found)
    except TempoError:
        return None


def _paired(arm: ArmData, base: ArmData) -> bool:
    try:
        check_paired(arm, base)
    except TempoError:
        return False
    return True
