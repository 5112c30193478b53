"""Rich tables of results (printed to stdout: they are the command's answer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def accuracy_table(results: Sequence[dict[str, Any]], title: str = "test accuracy") -> Table:
    """Rows: checkpoints; columns: samples per class; cells: final accuracy mean ± std.

    `results`: CLI.md `results` records (checkpoint, samples_pc, runs,
    accuracy_final_mean, accuracy_final_std).
    """
    cols: list[int | None] = []
    rows: list[str] = []
    cells: dict[tuple[str, int | None], str] = {}
    for r in results:
        if r["samples_pc"] not in cols:
            cols.append(r["samples_pc"])
        if r["checkpoint"] not in rows:
            rows.append(r["checkpoint"])
        mean, std = r["accuracy_final_mean"], r["accuracy_final_std"]
        cells[(r["checkpoint"], r["samples_pc"])] = (
            f"{mean:.3f} ± {std:.3f}" if r.get("runs", 1) > 1 else f"{mean:.3f}"
        )
    ints = sorted(c for c in cols if c is not None)
    cols = ints + ([None] if None in cols else [])
    table = Table(title=title)
    table.add_column("checkpoint \\ samples per class", style="bold")
    for c in cols:
        table.add_column("full" if c is None else str(c), justify="right")
    for name in rows:
        table.add_row(name, *(cells.get((name, c), "-") for c in cols))
    return table
