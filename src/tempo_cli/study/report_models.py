"""What the report shows, renderer-neutral: report_html and report_md only escape and format.

Each `*_model` turns one table of study.json (report_tables.py builds those) into a
`TableModel` of plain texts; the number formats are here so both reports write the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tempo_cli.study.report_tables import REFERENCE_LR

# --- table models: report_html and report_md only escape and format these -------------
# Texts here are plain (unescaped); each writer escapes every text it prints.


@dataclass(frozen=True)
class CellModel:
    """One cell after the arm column. `col` None: plain text (no data attributes);
    `note` is shown after the text as "(note)"; `gain` in points over the baseline."""

    text: str
    col: str | None = None
    cell: dict[str, Any] | None = None
    note: str = ""
    best: bool = False
    gain: float | None = None
    muted: bool = False


@dataclass(frozen=True)
class RowModel:
    """One row: the arm (and what the row is besides it), its cells' data-table key."""

    arm: str
    table: str
    cells: list[CellModel] = field(default_factory=list)
    label: str = ""

    @property
    def head(self) -> str:
        """The first column's text: "arm" or "arm · label"."""
        return f"{self.arm} · {self.label}" if self.label else self.arm


@dataclass(frozen=True)
class TableModel:
    """A table and the texts around it. `cell_class`: None for plain cells (the numbers'
    data attributes on a span), else the class of cells that carry them themselves."""

    key: str
    header: list[str]
    rows: list[RowModel]
    caption: str = ""
    cell_class: str | None = None
    #: Paragraphs before the table; a titled list after it.
    notes: tuple[str, ...] = ()
    listing: tuple[str, tuple[str, ...]] | None = None


def _value(col: str, cell: dict[str, Any] | None, text: str | None = None) -> CellModel:
    return CellModel(fmt_cell(cell) if text is None else text, col, cell)


def accuracy_model(table: dict[str, Any], key: str) -> TableModel:
    """Rows = arms, columns = samples per class; cells mean ± std, best and gain marked."""
    rows = []
    for row in table["rows"]:
        arm, cells = row["arm"], []
        for col in table["columns"]:
            gain = row["gains"].get(col) if arm != table["baseline"] else None
            cell = row["cells"].get(col)
            best = arm in table["best"].get(col, [])
            cells.append(CellModel(fmt_cell(cell), col, cell, best=best, gain=gain))
        rows.append(RowModel(arm, key, cells))
    base = table.get("baseline")
    spread = (
        f"one {table['over'].removeprefix('1 ')}"
        if single_runs(table)
        else (f"mean ± std over {table['over']}")
    )
    caption = (
        f"Final test accuracy, {spread}. Columns: labelled samples "
        "per class. Bold: the best per column"
        + (f"; +x: the gain in points over the baseline {base}." if base else ".")
    )
    from tempo_cli.study.intervals import interval_items

    # the headline's sentences open the report; the other tables' open their section
    notes = tuple(table.get("intervals", {}).get("verdicts", [])) if key != "headline" else ()
    return TableModel(
        key,
        ["arm", *table["columns"]],
        rows,
        caption,
        "cell",
        notes=notes,
        listing=interval_items(table),
    )


def single_runs(table: dict[str, Any]) -> bool:
    """Every cell of an accuracy table is one run (no spread to show)."""
    return all(c.get("n") == 1 for row in table["rows"] for c in row["cells"].values())


def lr_model(view: dict[str, Any]) -> TableModel:
    """Per arm a row at the reference lr (when in the grid) and one at the chosen lr."""
    ref = view["reference_lr"]
    kinds = ("reference", "chosen") if ref is not None else ("chosen",)
    rows = []
    for row in view["rows"]:
        for kind in kinds:
            cells = []
            for col in view["columns"]:
                cell = (row["cells"].get(col) or {}).get(kind)
                lr = cell.get("lr") if kind == "chosen" and cell else None
                note = "" if lr is None else f"lr {fmt_lr(lr)}"
                cells.append(CellModel(fmt_cell(cell), col, cell, note=note))
            label = (
                f"lr {fmt_lr(ref)}" if kind == "reference" else f"chosen on {row['selected_on']}"
            )
            rows.append(RowModel(row["arm"], f"lr-{kind}", cells, label))
    missing = f"The reference lr {fmt_lr(REFERENCE_LR)} was not in the grid."
    return TableModel(
        "lr",
        ["arm · lr", *view["columns"]],
        rows,
        "Linear probe at the reference lr and at the lr chosen on val (or on test, marked).",
        "",
        notes=() if ref is not None else (missing,),
        listing=("Order of the arms, best first:", tuple(lr_orders(view))),
    )


def lr_orders(view: dict[str, Any]) -> list[str]:
    """Per column, "col: reference: a > b; chosen: b > a" (the arms best first)."""
    out = []
    for col in view["columns"]:
        order = view["order"][col]
        parts = [
            f"{k}: " + " > ".join(order[k])
            for k in ("reference", "chosen")
            if order.get(k) is not None
        ]
        out.append(f"{col}: " + "; ".join(parts))
    return out


def relevance_model(table: dict[str, Any]) -> TableModel:
    rows = []
    for r in table["rows"]:
        if "skipped" in r:
            cells = [CellModel(f"skipped: {r['skipped']}", muted=True), CellModel("")]
        else:
            cell = {"mean": r["rr_mean"], "std": r["rr_std"], "n": r["n"]}
            cells = [_value("rr", cell), CellModel(str(r["over"]))]
        rows.append(RowModel(r["arm"], "relevance", cells))
    caption = (
        "Relative relevance inside the hand masks (share of positive LRP relevance), mean ± std."
    )
    return TableModel("relevance", ["arm", "relative relevance", "± over"], rows, caption)


def noise_model(table: dict[str, Any]) -> TableModel:
    levels = table["levels"]
    rows = [
        RowModel(r["arm"], "noise", [_value(lv, r["accuracy"].get(lv)) for lv in levels])
        for r in table["rows"]
    ]
    caption = "Test accuracy per Gaussian noise level."
    return TableModel("noise", ["arm", *levels], rows, caption)


def lrp_model(table: dict[str, Any]) -> TableModel:
    rows = [RowModel(r["arm"], "lrp", [_value("accuracy", r["accuracy"])]) for r in table["rows"]]
    caption = "Test accuracy of the classifier of each arm, the one LRP explains."
    return TableModel("lrp", ["arm", "classifier accuracy"], rows, caption)


def segment_model(table: dict[str, Any]) -> TableModel:
    keys = ("segm_AP", "bbox_AP", "iterations_to_90pct_final_segm_AP")
    rows = []
    for r in table["rows"]:
        it = r.get(keys[2])
        cells = [_value(k, r.get(k)) for k in keys[:2]]
        cells.append(_value(keys[2], it, "–" if not it else f"{it['mean']:g}"))
        rows.append(RowModel(r["arm"], "segment", cells))
    head = ["arm", "segm AP", "bbox AP", "iterations to 90% segm AP"]
    caption = (
        "Mask R-CNN: final AP and the first evaluated iteration reaching 90% of the final segm AP."
    )
    return TableModel("segment", head, rows, caption)


def stages_model(data: dict[str, Any]) -> TableModel:
    """The appendix's wall time per stage (a skipped stage notes why)."""
    rows = []
    for r in data.get("stages", []):
        repeat = "" if r["repeat"] is None else str(r["repeat"])
        note = f"skipped: {r['skipped']}" if r.get("skipped") else ""
        seconds = CellModel(fmt_seconds(r.get("seconds")), note=note)
        rows.append(
            RowModel(r["arm"], "stages", [CellModel(repeat), CellModel(r["stage"]), seconds])
        )
    return TableModel(
        "stages", ["arm", "repeat", "stage", "wall time"], rows, "Wall time per stage."
    )


@dataclass(frozen=True)
class AppendixModel:
    """The appendix's texts: versions and device, the resolved study (JSON), and per arm
    (name, source) each stage's resolved settings (`<run dir>/<stage>`, `k=v k=v`)."""

    facts: str
    study: str
    arms: list[tuple[str, str, list[tuple[str, str]]]]


def appendix_model(data: dict[str, Any]) -> AppendixModel:
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    arms = []
    for arm, info in data.get("arms", {}).items():
        stages = [
            (f"{run['dir']}/{stage}", _settings_text(s.get("config", {})))
            for run in info.get("runs", [])
            for stage, s in run.get("stages", {}).items()
        ]
        arms.append((arm, str(info.get("source")), stages))
    return AppendixModel(
        f"Versions: {versions}. Device: {data.get('device')}.",
        json.dumps(data.get("study", {}), indent=1, default=str),
        arms,
    )


def _settings_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config.items())


def intro_items(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's opening facts (name, value), those without a value left out."""
    study = data.get("study", {})
    items = [
        ("origin", study.get("origin")),
        ("description", study.get("description")),
        ("pre-training data", study.get("data")),
        ("labelled data", study.get("labelled")),
        ("backbone", study.get("backbone")),
        ("image size", study.get("image_size")),
        ("baseline", study.get("baseline")),
        ("device", data.get("device")),
    ]
    return [(k, v) for k, v in items if v not in (None, "")]


# --- number formats shared by report_html and report_md -------------------------------


def embed_model(table: dict[str, Any]) -> TableModel:
    """Rows = arms; the embed stage's class agreement, same-group share (when the data has
    groups) and silhouette."""
    k = table.get("k")
    grouped = any(r.get("same_group_share") for r in table["rows"])
    cols = ["class_agreement", *(["same_group_share"] if grouped else []), "silhouette_cosine"]
    heads = {
        "class_agreement": f"class agreement @{k}",
        "same_group_share": f"same-group share @{k}",
        "silhouette_cosine": "silhouette (cosine)",
    }
    rows = [
        RowModel(r["arm"], "embed", [*(_value(c, r.get(c)) for c in cols), CellModel(r["over"])])
        for r in table["rows"]
    ]
    source = str(table.get("neighbours_from"))
    if table.get("leave_one_out"):
        source += " (each image left out of its own neighbours)"
    notes = (
        f"Frozen features of the {table.get('split')} split ({table.get('images')} images, "
        f"{table.get('classes')} classes), each image's {k} nearest neighbours by cosine "
        f"similarity among {source}. Class agreement: the share of those neighbours with the "
        "image's class. Same-group share: the share from its own group (video, session, "
        "person): high with a high agreement is the sign of a shortcut. Silhouette on cosine "
        "distance: how far apart the classes lie (-1 to 1), without neighbours or a probe.",
    )
    caption = "Mean over every image of the split; ± over the arm's pre-training repeats."
    header = ["arm", *(heads[c] for c in cols), "± over"]
    return TableModel("embed", header, rows, caption, notes=notes)


def fmt_acc(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def fmt_cell(cell: dict[str, Any] | None) -> str:
    """ "0.635 ± 0.005" (or "0.635" when the cell has no spread: one run, or no std)."""
    if not cell:
        return "–"
    std = cell.get("std")
    single = std is None or cell.get("n") == 1
    return fmt_acc(cell["mean"]) + ("" if single else f" ± {std:.3f}")


def fmt_gain(points: float | None) -> str:
    """ "+38.6" points over the baseline."""
    return "" if points is None else f"{points:+.1f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}:{sec:02d}" if m else f"{s:.1f} s"


def fmt_lr(lr: Any) -> str:
    if lr is None:
        return ""
    if isinstance(lr, list):
        return "/".join(f"{x:g}" for x in lr)
    return f"{lr:g}"


def _split_text(table: dict[str, Any]) -> str:
    how = table.get("split")
    if how == "seeded":
        o = table.get("options", {})
        fractions = ",".join(f"{f:g}" for f in o.get("fractions", []))
        text = f"made by tempo (seeded: fractions {fractions}, seed {o.get('seed')}"
        return text + (f", groups by {o['group_by']!r})" if o.get("group_by") else ")")
    return {"given": "given by the split folders", "manifest": "given by the manifest"}.get(
        str(how), str(how)
    )


def _copies_text(r: dict[str, Any]) -> str:
    examples = "; ".join(f"{q} ~ {t} ({s:.3f})" for q, t, s in r.get("examples", []))
    text = f"{r['found']} of {r['checked']} {r['split']} images have a near-copy in {r['against']}"
    return text + (f", e.g. {examples}" if examples else "")


def _two(table: dict[str, Any]) -> str:
    """How many groups have images in two splits ("none" for a made split, where none can)."""
    return str(table.get("groups_in_two_splits") or "none")


def data_model(table: dict[str, Any]) -> TableModel:
    """Rows = classes (and a total), columns = splits: images; the split, groups and the
    near-copy checks as notes."""
    splits = list(table["images"])
    rows = [
        RowModel(c, "data", [CellModel(str(table["images"][s].get(c, 0))) for s in splits])
        for c in table["classes"]
    ]
    totals = [CellModel(str(sum(table["images"][s].values()))) for s in splits]
    rows.append(RowModel("all classes", "data", totals))
    groups = table.get("groups")
    notes = [
        f"Labelled data: {table['form']} {table['source']}; split {_split_text(table)}"
        + (f"; {groups} groups, {_two(table)} in two splits." if groups else "; no groups.")
    ]
    threshold = next((r["threshold"] for r in table.get("near_copies", [])), None)
    for r in table.get("near_copies", []):
        notes.append(f"Near-copies: {_copies_text(r)}.")
    frames = table.get("frames")
    if frames and "skipped" in frames:
        notes.append(f"Test images against the pre-training frames: {frames['skipped']}.")
    elif frames:
        threshold = frames["threshold"]
        share = frames["found"] / max(frames["checked"], 1)
        notes.append(
            f"Near-copies: {_copies_text(frames)} ({frames['frames']} frames; {share:.0%} of "
            "the test images)."
        )
    caption = "Labelled images per split and class."
    if threshold is not None:
        caption += (
            f" A near-copy: 32x32 grey thumbnails with zero-mean normalised correlation >= "
            f"{threshold} (docs/data.md)."
        )
    return TableModel("data", ["class", *splits], rows, caption, notes=tuple(notes))
