"""One arm of a finished study, as an exported model's card tells it (`--study --arm`).

Read from `runs/<study>/study.json` (its schema is in `study/collect.py`), never from the
stage folders: the card copies the numbers the study's own report shows. The file format
is the interface, so `tempo export` imports nothing of `study/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_cli import places
from tempo_cli.errors import TempoError, UsageError

#: study.json's accuracy tables, in the order of the study's report, with their titles.
TABLES = (
    ("headline", "Linear probe accuracy"),
    ("semisup", "Semi-supervised (fine-tuned) accuracy"),
    ("knn", "k-NN accuracy"),
)


@dataclass
class ArmTable:
    """One accuracy table's row for the arm (and the baseline's row, to compare)."""

    title: str
    columns: list[str]  # samples per class ("1", "5", ..., "full")
    over: str  # what ± is over
    cells: dict[str, dict[str, Any]]  # col -> {mean, std, n}
    gains: dict[str, float | None]  # col -> points over the baseline
    baseline_cells: dict[str, dict[str, Any]] | None = None


@dataclass
class ArmEvaluation:
    """What the study measured of one arm, and where its model is."""

    study: str
    arm: str
    baseline: str | None
    labelled: str  # the labelled data set the probes ran on
    image_size: int | None
    backbone: str  # the study's architecture (what `random` / `imagenet` arms build)
    source: str  # pretrain | checkpoint | random | imagenet
    repeats: int
    model_path: str  # the arm's backbone: its (first) pre-training's model.pt, or its input
    tables: list[ArmTable] = field(default_factory=list)


def study_folder(value: str) -> Path:
    """`--study` -> the study's folder (a path, else a name in the runs directory)."""
    for folder in (Path(value).expanduser(), places.runs_dir() / value):
        if (folder / "study.json").is_file():
            return folder
    raise UsageError(
        "--study",
        value,
        "a finished study's folder holding study.json, e.g. runs/NAME (run `tempo study` first)",
    )


def read_arm(study: str, arm: str) -> ArmEvaluation:
    """The arm `arm` of study `study`; UsageError naming the arms when it is not one."""
    folder = study_folder(study)
    try:
        data = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        arms: dict[str, Any] = data["arms"]
        spec: dict[str, Any] = data.get("study", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TempoError(f"cannot read {folder / 'study.json'}: {e}; rerun the study") from None
    if arm not in arms:
        raise UsageError("--arm", arm, "an arm of the study: " + ", ".join(arms))
    entry = arms[arm]
    source = str(entry.get("source", ""))
    tables = [t for key, title in TABLES if (t := _arm_table(data.get(key), arm, title))]
    baseline = next((data[k].get("baseline") for k, _ in TABLES if data.get(k)), None)
    return ArmEvaluation(
        study=str(data.get("name", folder.name)),
        arm=arm,
        baseline=baseline,
        labelled=str(spec.get("labelled", "")),
        image_size=spec.get("image_size"),
        backbone=str(spec.get("backbone", "resnet34")),
        source=source,
        repeats=int(entry.get("repeats", 1) or 1),
        model_path=_model_path(folder, entry, source),
        tables=tables,
    )


def _model_path(folder: Path, entry: dict[str, Any], source: str) -> str:
    """The arm's backbone: the first pre-training's model.pt, the arm's checkpoint, or
    the word random/imagenet."""
    if source == "pretrain":
        runs = entry.get("runs") or [{"dir": entry.get("folder", "")}]
        return str(folder / str(runs[0]["dir"]) / "pretrain" / "model.pt")
    if source == "checkpoint":
        path = Path(str(entry.get("checkpoint", "")))
        return str(path if path.is_absolute() else folder / path)
    return source


def _arm_table(table: dict[str, Any] | None, arm: str, title: str) -> ArmTable | None:
    """The arm's row of a study.json accuracy table, or None when the arm has none."""
    if not table:
        return None
    rows = {row.get("arm"): row for row in table.get("rows", [])}
    if arm not in rows:
        return None
    base = rows.get(table.get("baseline")) if table.get("baseline") != arm else None
    return ArmTable(
        title=title,
        columns=[str(c) for c in table.get("columns", [])],
        over=str(rows[arm].get("over") or table.get("over") or ""),
        cells=dict(rows[arm].get("cells", {})),
        gains=dict(rows[arm].get("gains", {})),
        baseline_cells=dict(base.get("cells", {})) if base else None,
    )


def table_markdown(table: ArmTable, arm: str, baseline: str | None) -> str:
    """The table as Markdown: one column per samples-per-class setting; accuracy in %."""
    cols = [c for c in table.columns if c in table.cells]
    head = "| | " + " | ".join(f"{c} / class" for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    lines.append(f"| {arm} | " + " | ".join(_cell(table.cells[c]) for c in cols) + " |")
    if table.baseline_cells is not None and baseline:
        base = table.baseline_cells
        lines.append(
            f"| {baseline} (baseline) | "
            + " | ".join(_cell(base[c]) if c in base else "" for c in cols)
            + " |"
        )
        gains = [table.gains.get(c) for c in cols]
        lines.append(
            "| gain (points) | "
            + " | ".join("" if g is None else f"{g:+.1f}" for g in gains)
            + " |"
        )
    return "\n".join(lines)


def _cell(cell: dict[str, Any]) -> str:
    mean, std, n = cell.get("mean"), cell.get("std"), cell.get("n")
    if mean is None:
        return ""
    text = f"{100 * float(mean):.1f}"
    if std is not None:
        text += f" ± {100 * float(std):.1f}"
    return text + (f" (n={n})" if n is not None else "")
