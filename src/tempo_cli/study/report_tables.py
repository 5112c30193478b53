"""The study's tables (study.json sections) from the loaded stage folders, the
renderer-neutral table models both reports format, and the number formats they share.

A CELL is {mean, std, n}: copied from one record (n = its probe runs) or, for an arm with
pre-training repeats, the mean and population std of the repeats' values (n = repeats).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tempo_cli.report.accuracy_plots import samples_label

if TYPE_CHECKING:
    from tempo_cli.study.collect import RunData

#: The lr the reference study used for every probe: the lr view's fixed comparison point.
REFERENCE_LR = 0.01

Loaded = dict[str, list["RunData"]]


def combine(values: Sequence[float], single: dict[str, Any] | None = None) -> dict[str, Any]:
    """A CELL: `single` (copied) when there is one value, else mean ± population std."""
    if len(values) == 1 and single is not None:
        return single
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 6), "std": round(std, 6), "n": len(values)}


def _over(runs: list[RunData], stage: str, unit: str) -> str:
    """What an arm's ± is over: its pre-trainings, or one record's probe runs."""
    done = [r for r in runs if stage in r.stages]
    if len(done) > 1:
        return f"{len(done)} pre-trainings"
    results = done[0].stages[stage].metrics.get("results", []) if done else []
    n = results[0].get("runs", 1) if results else 1
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _selected(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per column, the chosen lr's record (`selected` true; the only one without a grid)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("selected", True):
            out.setdefault(samples_label(r.get("samples_pc")), r)
    return out


def _record_cell(r: dict[str, Any]) -> dict[str, Any]:
    cell = {"mean": r["accuracy_final_mean"], "std": r["accuracy_final_std"], "n": r["runs"]}
    if r.get("lr") is not None:
        cell["lr"] = r["lr"]
    return cell


def _columns(loaded: Loaded, stage: str) -> list[str]:
    """Samples-per-class columns in run order (the first arm that has each)."""
    cols: list[str] = []
    for runs in loaded.values():
        for run in runs:
            s = run.stages.get(stage)
            for r in s.metrics.get("results", []) if s else []:
                if samples_label(r.get("samples_pc")) not in cols:
                    cols.append(samples_label(r.get("samples_pc")))
    return cols


def _cells(
    runs: list[RunData], stage: str, pick: Callable[[list[dict[str, Any]]], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{column: CELL} of one arm; `pick` maps a run's results to {column: record}."""
    per_run = [pick(r.stages[stage].metrics.get("results", [])) for r in runs if stage in r.stages]
    out: dict[str, dict[str, Any]] = {}
    for col in dict.fromkeys(c for p in per_run for c in p):
        recs = [p[col] for p in per_run if col in p]
        values = [float(r["accuracy_final_mean"]) for r in recs]
        cell = combine(values, _record_cell(recs[0]) if len(recs) == 1 else None)
        lrs = sorted({r["lr"] for r in recs if r.get("lr") is not None})
        if len(recs) > 1 and lrs:
            cell["lr"] = lrs[0] if len(lrs) == 1 else lrs
        out[col] = cell
    return out


def best_per_column(rows: list[dict[str, Any]], cols: list[str]) -> dict[str, list[str]]:
    """Per column, the arm(s) with the highest mean (ties all marked)."""
    best: dict[str, list[str]] = {}
    for col in cols:
        means = {r["arm"]: r["cells"][col]["mean"] for r in rows if col in r["cells"]}
        if means:
            top = max(means.values())
            best[col] = [a for a, m in means.items() if m == top]
    return best


def gains(cells: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float | None]:
    """Points over the baseline per column (None where the baseline has no cell)."""
    base = base or {}
    return {
        col: round(100.0 * (c["mean"] - base[col]["mean"]), 4) if col in base else None
        for col, c in cells.items()
    }


def accuracy_table(stage: str, loaded: Loaded, baseline: str | None) -> dict[str, Any] | None:
    """The headline-shaped table of `stage` (linear, semisup or knn), or None if it never ran."""
    cols = _columns(loaded, stage)
    if not cols:
        return None
    unit = "probe run" if stage != "semisup" else "fine-tuning run"
    rows = [
        {"arm": arm, "over": _over(runs, stage, unit), "cells": _cells(runs, stage, _selected)}
        for arm, runs in loaded.items()
        if any(stage in r.stages for r in runs)
    ]
    base_row = next((r for r in rows if r["arm"] == baseline), None)
    for row in rows:
        row["gains"] = gains(row["cells"], base_row["cells"] if base_row else None)
    overs = list(dict.fromkeys(r["over"] for r in rows))
    return {
        "stage": stage,
        "columns": cols,
        "baseline": baseline if base_row else None,
        "over": "; ".join(overs),
        "rows": rows,
        "best": best_per_column(rows, cols),
    }


def _at_lr(lr: float) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def pick(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {samples_label(r.get("samples_pc")): r for r in records if r.get("lr") == lr}

    return pick


def lr_view(loaded: Loaded) -> dict[str, Any] | None:
    """Each arm at the reference lr and at the chosen lr, when a linear lr grid ran."""
    lrs = {
        r.get("lr")
        for runs in loaded.values()
        for run in runs
        for r in (run.stages["linear"].metrics.get("results", []) if "linear" in run.stages else [])
    }
    if len(lrs - {None}) < 2:
        return None
    ref = REFERENCE_LR if REFERENCE_LR in lrs else None
    cols = _columns(loaded, "linear")
    rows = []
    for arm, runs in loaded.items():
        done = [r for r in runs if "linear" in r.stages]
        if not done:
            continue
        chosen = _cells(runs, "linear", _selected)
        reference = _cells(runs, "linear", _at_lr(ref)) if ref is not None else {}
        on = {r.stages["linear"].metrics.get("selected_on") for r in done} - {None}
        cells = {c: {"reference": reference.get(c), "chosen": chosen[c]} for c in chosen}
        rows.append({"arm": arm, "selected_on": "/".join(sorted(on)) or None, "cells": cells})
    order = {}
    for col in cols:
        order[col] = {
            key: _order(rows, col, key) if key == "chosen" or ref is not None else None
            for key in ("reference", "chosen")
        }
    return {"reference_lr": ref, "columns": cols, "rows": rows, "order": order}


def _order(rows: list[dict[str, Any]], col: str, key: str) -> list[str]:
    """Arms best first at column `col` of the lr view (`key`: reference or chosen)."""
    have = [
        (r["cells"][col][key]["mean"], r["arm"]) for r in rows if r["cells"].get(col, {}).get(key)
    ]
    return [arm for _, arm in sorted(have, key=lambda t: -t[0])]


def _first_model(run: RunData, stage: str) -> dict[str, Any] | None:
    s = run.stages.get(stage)
    models = s.metrics.get("models") if s else None
    return models[0] if models else None


def noise_table(loaded: Loaded) -> dict[str, Any] | None:
    """Accuracy per noise level per arm (each arm's noise stage, first model)."""
    levels: list[str] = []
    rows = []
    for arm, runs in loaded.items():
        per_run = [m["accuracy_by_level"] for r in runs if (m := _first_model(r, "noise"))]
        if not per_run:
            continue
        acc = {}
        for level in dict.fromkeys(k for p in per_run for k in p):
            values = [float(p[level]) for p in per_run if level in p]
            acc[level] = combine(values, {"mean": values[0], "std": None, "n": 1})
            if level not in levels:
                levels.append(level)
        over = f"{len(per_run)} pre-trainings" if len(per_run) > 1 else "one evaluation"
        rows.append({"arm": arm, "over": over, "accuracy": acc})
    return {"levels": levels, "rows": rows} if rows else None


def relevance_table(loaded: Loaded) -> dict[str, Any] | None:
    """Relative relevance inside the hand masks per arm (or why the stage was skipped)."""
    rows = []
    for arm, runs in loaded.items():
        models = [m for r in runs if (m := _first_model(r, "relevance"))]
        skipped = [
            r.stages["relevance"].status.get("skipped") for r in runs if "relevance" in r.stages
        ]
        if models:
            row: dict[str, Any] = {"arm": arm}
            if len(models) == 1:
                m = models[0]
                row.update(rr_mean=m["rr_mean"], rr_std=m["rr_std"], n=m.get("n"))
                row["over"] = f"{m.get('n')} images"
            else:
                cell = combine([float(m["rr_mean"]) for m in models])
                row.update(rr_mean=cell["mean"], rr_std=cell["std"], n=cell["n"])
                row["over"] = f"{len(models)} pre-trainings"
            rows.append(row)
        elif any(skipped):
            rows.append({"arm": arm, "skipped": next(s for s in skipped if s)})
    return {"rows": rows} if rows else None


def lrp_table(loaded: Loaded) -> dict[str, Any] | None:
    """Classifier accuracy and contact sheets (relative paths) of each arm's lrp stage."""
    rows = []
    for arm, runs in loaded.items():
        firsts = [(r, m) for r in runs if (m := _first_model(r, "lrp"))]
        if not firsts:
            continue
        done = [r for r, _ in firsts]
        values = [float(m["accuracy"]) for _, m in firsts]
        sheets_dir = done[0].stages["lrp"].dir + "/sheets"
        rows.append(
            {
                "arm": arm,
                "accuracy": combine(values, {"mean": values[0], "std": None, "n": 1}),
                "sheets_dir": sheets_dir,
            }
        )
    return {"rows": rows} if rows else None


def segment_table(loaded: Loaded) -> dict[str, Any] | None:
    """Final segm/bbox AP and iterations to 90% of the final segm AP per arm."""
    keys = ("segm_AP", "bbox_AP", "iterations_to_90pct_final_segm_AP")
    rows = []
    for arm, runs in loaded.items():
        done = [r.stages["segment"].metrics for r in runs if "segment" in r.stages]
        done = [m for m in done if m.get("final")]
        if not done:
            continue
        row: dict[str, Any] = {"arm": arm}
        for key in keys:
            values = [m["final"].get(key) if key != keys[2] else m.get(key) for m in done]
            values = [float(v) for v in values if v is not None]
            row[key] = combine(values, {"mean": values[0], "std": None, "n": 1}) if values else None
        rows.append(row)
    return {"rows": rows} if rows else None


def pretrain_table(loaded: Loaded) -> dict[str, Any] | None:
    """Pre-training loss (and throughput) per epoch of every pre-training run."""
    rows = []
    for arm, runs in loaded.items():
        for run in runs:
            s = run.stages.get("pretrain")
            if s is None or not s.metrics.get("epochs"):
                continue
            epochs = [
                {k: e.get(k) for k in ("epoch", "loss", "pairs_per_s")} for e in s.metrics["epochs"]
            ]
            rows.append({"arm": arm, "repeat": run.repeat, "epochs": epochs})
    return {"rows": rows} if rows else None


def data_table(loaded: Loaded) -> dict[str, Any] | None:
    """The `data` stage's metrics (`tempo data check`): the labelled data, its split, groups
    and near-copy checks (study.json `data`), as written; None when it did not run."""
    for runs in loaded.values():
        for run in runs:
            stage = run.stages.get("data")
            if stage is not None and stage.metrics.get("data"):
                m = stage.metrics
                table = {**m["data"], "near_copies": m.get("near_copies", [])}
                if "frames" in m:
                    table["frames"] = m["frames"]
                return table
    return None


#: The numbers of an embed stage's record that the report shows, in its column order.
EMBED_NUMBERS = ("class_agreement", "same_group_share", "silhouette_cosine")


def embed_table(loaded: Loaded) -> dict[str, Any] | None:
    """What the features learned, per arm: the embed stage's numbers (mean ± std over an
    arm's pre-training repeats) and the files its figures are drawn from (first repeat)."""
    rows, about = [], None
    for arm, runs in loaded.items():
        done = [r.stages["embed"] for r in runs if "embed" in r.stages]
        done = [s for s in done if s.metrics.get("embeddings")]
        if not done:
            continue
        records = [s.metrics["embeddings"][0] for s in done]
        row: dict[str, Any] = {
            "arm": arm,
            "over": f"{len(done)} pre-trainings" if len(done) > 1 else "one run",
            "dir": done[0].dir,
            "npz": f"{done[0].dir}/{records[0]['file']}",
            "checkpoint": records[0]["checkpoint"],
        }
        for key in EMBED_NUMBERS:
            values = [float(r[key]) for r in records if r.get(key) is not None]
            single = {"mean": values[0], "std": None, "n": 1} if values else None
            row[key] = combine(values, single) if values else None
        rows.append(row)
        if about is None:
            keys = ("data", "split", "images", "classes", "neighbours_from", "leave_one_out")
            about = {k: done[0].metrics.get(k) for k in keys}
            about["k"] = records[0].get("k")
    return {**(about or {}), "rows": rows} if rows else None


def monitor_table(loaded: Loaded) -> dict[str, Any] | None:
    """The pre-training monitor per epoch of every pre-training run: its accuracy (the
    monitor's kind, on test and val) and RankMe (pretrain metrics.json `epochs[].monitor`)."""
    rows = []
    for arm, runs in loaded.items():
        for run in runs:
            s = run.stages.get("pretrain")
            if s is None:
                continue
            kind = (s.metrics.get("monitor") or {}).get("kind")
            epochs = [
                {
                    "epoch": e.get("epoch"),
                    "accuracy": e["monitor"].get(kind),
                    "accuracy_val": e["monitor"].get(f"{kind}_val"),
                    "rankme": e["monitor"].get("rankme"),
                }
                for e in s.metrics.get("epochs", [])
                if e.get("monitor")
            ]
            if epochs:
                rows.append({"arm": arm, "repeat": run.repeat, "kind": kind, "epochs": epochs})
    return {"rows": rows} if rows else None
