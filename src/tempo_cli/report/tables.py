"""Rich tables of results (printed to stdout: they are the command's answer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

#: Marks of a value chosen among an lr grid: on the val split, or on test (optimistic).
CHOSEN_ON = {"val": "*", "test": "†"}


def row_label(r: dict[str, Any], grid: bool) -> str:
    """A result's row: its checkpoint, with its lr when several lrs ran."""
    if grid and r.get("lr") is not None:
        return f"{r['checkpoint']} lr {r['lr']:g}"
    return r["checkpoint"]


def accuracy_table(results: Sequence[dict[str, Any]], title: str = "test accuracy") -> Table:
    """Rows: checkpoints (x lr, when an lr grid ran); columns: samples per class; cells:
    final accuracy mean ± std; the lr chosen per checkpoint and column is marked `*` when
    chosen on val, `†` when chosen on test (the caption says so).

    `results`: CLI.md `results` records (checkpoint, samples_pc, runs,
    accuracy_final_mean, accuracy_final_std; lr, selected, selected_on when a head ran).
    """
    grid = len({r.get("lr") for r in results}) > 1
    cols: list[int | None] = []
    rows: list[str] = []
    cells: dict[tuple[str, int | None], str] = {}
    marks: set[str] = set()
    for r in results:
        if r["samples_pc"] not in cols:
            cols.append(r["samples_pc"])
        row = row_label(r, grid)
        if row not in rows:
            rows.append(row)
        mean, std = r["accuracy_final_mean"], r["accuracy_final_std"]
        cell = f"{mean:.3f} ± {std:.3f}" if r.get("runs", 1) > 1 else f"{mean:.3f}"
        if grid and r.get("selected"):
            mark = CHOSEN_ON[r.get("selected_on", "test")]
            marks.add(mark)
            cell += f" {mark}"
        cells[(row, r["samples_pc"])] = cell
    ints = sorted(c for c in cols if c is not None)
    cols = ints + ([None] if None in cols else [])
    notes = {"*": "* lr chosen on val", "†": "† lr chosen on test (no val split: optimistic)"}
    caption = "; ".join(notes[m] for m in sorted(marks)) or None
    table = Table(title=title, caption=caption)
    table.add_column("checkpoint \\ samples per class", style="bold")
    for c in cols:
        table.add_column("full" if c is None else str(c), justify="right")
    for name in rows:
        table.add_row(name, *(cells.get((name, c), "-") for c in cols))
    return table
