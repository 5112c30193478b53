"""The study's answer with its uncertainty: paired 95% intervals and verdicts in words.

For each accuracy table (headline = linear, semisup, knn) with a baseline, every arm's
gain over the baseline at every column gets a paired interval recomputed from the
predictions its stage folders keep (`predictions.npz`; one folder per pre-training
repeat), the "distinguishable" call is Holm's over the table, and each column gets one
sentence (`evaluate/intervals.py`). The table in study.json then holds

    intervals: {method: text (how, which sources of variance are covered, Holm),
                verdicts: [one sentence per column],
                comparisons: [{arm, baseline, samples_pc, column, gain, low, high,
                               p_value, distinguishable, sources, ...}]}

Stage folders written before predictions were kept give no intervals (the table stands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tempo_cli.report.accuracy_plots import samples_label

#: The accuracy tables of study.json that get intervals.
INTERVAL_TABLES = ("headline", "semisup", "knn")


def add_intervals(data: dict[str, Any], loaded: dict[str, list[Any]], study_dir: Path) -> None:
    """Add `intervals` to each accuracy table of `data` (collect.collect_study's dict)
    that has a baseline; `loaded`: arm -> its collect.RunData (one per repeat)."""
    from tempo_cli.evaluate.intervals import method_note, table_comparisons, verdicts

    for key in INTERVAL_TABLES:
        table = data.get(key)
        if not table or not table.get("baseline"):
            continue
        stage = table["stage"]
        arms = {
            arm: [study_dir / run.stages[stage].dir for run in runs if stage in run.stages]
            for arm, runs in loaded.items()
        }
        found = table_comparisons({a: d for a, d in arms.items() if d}, table["baseline"])
        if not found:
            continue
        table["intervals"] = {
            "method": method_note(found),
            "verdicts": verdicts(found),
            "comparisons": [{**c.to_dict(), "column": samples_label(c.samples_pc)} for c in found],
        }


def headline_verdicts(data: dict[str, Any]) -> list[str]:
    """The headline table's sentences (the top of the report, the printed headline)."""
    return list(((data.get("headline") or {}).get("intervals") or {}).get("verdicts", []))


def interval_items(table: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """An accuracy table's intervals as a titled list (the method, one line per gain)."""
    iv = table.get("intervals")
    if not iv:
        return None
    items = tuple(
        f"{c['arm']}, {_column(c['column'])}: {c['gain']:+.1f} points (95% interval "
        f"{c['low']:.1f} to {c['high']:.1f}, p = {c['p_value']:.4f}): "
        + ("distinguishable" if c["distinguishable"] else "not distinguishable")
        for c in iv["comparisons"]
    )
    return iv["method"], items


def _column(col: str) -> str:
    return "full" if col == "full" else f"{col} per class"
