"""Read a study's stage folders into one JSON-able dict: `runs/<study>/study.json`.

Every number is copied from a stage's metrics.json (or stage.json for wall times), never
recomputed; the only arithmetic is (a) mean ± std (population) across the pre-training
repeats of an arm with `repeats > 1` (each such cell says so in `over`), (b) gains in
points over the baseline arm (`100 * (mean - baseline mean)`) and (c) their paired 95%
intervals, recomputed from the per-image predictions each eval stage keeps
(study/intervals.py). A stage that did not run
(not selected, skipped, unfinished) is simply absent from the tables. Paths are relative
to the study folder, so two runs of one study in different places give the same dict.

Schema (`schema` = 1):
    name: str                  the study's name (runs/<name>/)
    study: dict                Study.to_dict(): the resolved study file (the settings appendix)
    versions: {tempo, torch, torchvision, python}
    device: str                the device "auto"/the study's choice resolved to here
    arms: {arm name: {folder, source, repeats, checkpoint,
           runs: [{repeat: k | null, dir: "<folder>[/seed-<k>]",
                   stages: {stage: {complete, seconds, skipped?, config}}}]}}
        `config` = the stage's resolved command settings (config.json) without
        name/quiet/debug, paths inside the study folder relative to it; stages include
        the internal "pretrain" and "classifier".
    headline, semisup, knn: a TABLE of the linear / semisup / knn stage, or absent:
        {stage, columns: ["1", "5", ..., "full"] (samples per class, run order),
         baseline: arm name | null, over: caption text of what ± is over,
         rows: [{arm, over, cells: {col: {mean, std, n, lr?}},
                 gains: {col: points over the baseline | null}}],
         best: {col: [arm names with the highest mean]},
         intervals: {method, verdicts: [one sentence per column], comparisons: [{arm,
                     column, gain, low, high, p_value, distinguishable, sources, ...}]}
                    (with a baseline and kept predictions; study/intervals.py)}
        A cell is the selected lr's record (`selected: true`; the only record without a
        grid): accuracy_final_mean / accuracy_final_std over `n` probe runs; for an arm with
        repeats, mean / std of those means over `n` pre-trainings.
    data: the `data` stage's metrics (`tempo data check`, data/check.py): form, source,
        split (given|manifest|seeded) and its options, classes, images {split: {class: n}},
        groups, near_copies [{split, against, checked, found, threshold, examples}], frames
        (test against the pre-training frames, + `frames`: how many; or {skipped})
    lr: {reference_lr: 0.01 | null, columns, rows: [{arm, selected_on: "val"|"test"|null,
         cells: {col: {reference: CELL | null, chosen: CELL (+ lr: [lrs])}}}],
         order: {col: {reference: [arms best first] | null, chosen: [...]}}}
        present when a linear lr grid ran.
    noise: {levels: ["0", "0.1", ...], rows: [{arm, over, accuracy: {level: {mean, std, n}}}]}
    relevance: {rows: [{arm, rr_mean, rr_std, n, over} | {arm, skipped: reason}]}
    lrp: {rows: [{arm, accuracy: CELL, sheets_dir: "<dir>/lrp/sheets"}]}
    segment: {rows: [{arm, segm_AP: CELL, bbox_AP: CELL,
                      iterations_to_90pct_final_segm_AP: CELL}]}
    embed: {data, split, images, classes, neighbours_from, leave_one_out, k,
            rows: [{arm, over, dir, npz, checkpoint, class_agreement: CELL,
                    same_group_share: CELL | null, silhouette_cosine: CELL}]}
        the embed stage's numbers; `npz` and `dir` (first repeat) are what the section's
        map and neighbour-grid figures are drawn from.
    monitor: {rows: [{arm, repeat, kind, epochs: [{epoch, accuracy, accuracy_val, rankme}]}]}
        the pre-training monitor per epoch (pretrain metrics.json `epochs[].monitor`).
    pretrain: {rows: [{arm, repeat, epochs: [{epoch, loss, pairs_per_s}]}]}
    curves: [{arm, path: "<dir>/linear/curves.png"}]   the probe curves of each arm
    stages: [{arm, repeat, stage, seconds, complete, skipped?}]   wall time per stage
    The tables (headline, lr, semisup, ...) are those of sections.SECTIONS, in its order.

Every timing sits under a key named `seconds`, ending in `_seconds`, or `pairs_per_s`
(`is_timing`); `without_timings` drops them, to compare two runs of a study.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_cli.settings.base import CommandSettings
from tempo_cli.study.fingerprint import METRICS_FILE, STAGE_FILE
from tempo_cli.study.intervals import add_intervals
from tempo_cli.study.sections import SECTIONS
from tempo_cli.study.stages import STAGES

SCHEMA = 1
#: Settings every command has (name, quiet, debug): how a stage ran, left out of `config`.
RUNTIME_KEYS = frozenset(CommandSettings.model_fields)
#: The resolved settings a command writes into its folder (report.run_dir.RunDir).
CONFIG_FILE = "config.json"


@dataclass
class StageData:
    """One finished stage folder: its stage.json, metrics.json and config.json."""

    dir: str  # relative to the study folder
    status: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any]


@dataclass
class RunData:
    """One pre-training repeat of an arm (repeat None: the arm has a single run)."""

    repeat: int | None
    dir: str
    stages: dict[str, StageData] = field(default_factory=dict)


def collect_study(study: Any, study_dir: str | Path) -> dict[str, Any]:
    """study.json's dict for `study` (spec.Study) from the stage folders under `study_dir`."""
    study_dir = Path(study_dir)
    loaded = {arm.name: read_arm(arm, study_dir) for arm in study.arms}
    baseline = study.baseline if study.baseline in loaded else None
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "name": study.name,
        "study": study.to_dict(),
        "versions": versions(),
        "device": device_text(getattr(study, "device", "auto")),
        "arms": {arm.name: arm_summary(arm, loaded[arm.name]) for arm in study.arms},
    }
    for section in SECTIONS:
        table = section.build(loaded, baseline)
        if table is not None:
            data[section.key] = table
    add_intervals(data, loaded, study_dir)  # recomputed from the kept predictions
    data["curves"] = probe_curves(loaded, study_dir)
    data["stages"] = stage_times(loaded)
    return data


def read_arm(arm: Any, study_dir: Path) -> list[RunData]:
    """The runs of one arm (one per pre-training repeat) with their finished stages."""
    repeats = int(getattr(arm, "repeats", 1) or 1)
    if repeats > 1:
        runs = [RunData(k, f"{arm.folder}/seed-{k}") for k in range(repeats)]
    else:
        runs = [RunData(None, arm.folder)]
    for run in runs:
        for stage in STAGES:
            data = read_stage(study_dir, f"{run.dir}/{stage}")
            if data is not None:
                run.stages[stage] = data
    return runs


def read_stage(study_dir: Path, rel: str) -> StageData | None:
    """A stage folder's files, or None when it did not finish (no metrics.json, or
    stage.json says incomplete). A skipped stage (stage.json "skipped") is kept."""
    folder = study_dir / rel
    status = _read_json(folder / STAGE_FILE) or {}
    if status and not status.get("complete", False):
        return None
    metrics = _read_json(folder / METRICS_FILE)
    if metrics is None and not status.get("skipped"):
        return None
    config = _read_json(folder / CONFIG_FILE) or {}
    config = {k: _relative(v, study_dir) for k, v in config.items() if k not in RUNTIME_KEYS}
    return StageData(rel, status, metrics or {}, config)


def _relative(value: Any, study_dir: Path) -> Any:
    """A settings value with paths inside the study folder made relative to it (the
    stages' own inputs: model.pt, classifier.pt), so study.json does not depend on where
    runs/ is."""
    if isinstance(value, list):
        return [_relative(v, study_dir) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return Path(value).resolve().relative_to(study_dir.resolve()).as_posix()
        except ValueError:
            return value
    return value


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or unreadable (a report never fails
    on one damaged stage: that stage is left out)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def arm_summary(arm: Any, runs: list[RunData]) -> dict[str, Any]:
    """The `arms` entry of one arm: what it is and which stages ran, with their settings."""
    return {
        "folder": arm.folder,
        "source": arm.source,
        "repeats": int(getattr(arm, "repeats", 1) or 1),
        "checkpoint": getattr(arm, "checkpoint", None),
        "runs": [
            {
                "repeat": run.repeat,
                "dir": run.dir,
                "stages": {name: _stage_summary(s) for name, s in run.stages.items()},
            }
            for run in runs
        ],
    }


def _stage_summary(stage: StageData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "complete": bool(stage.status.get("complete", True)),
        "seconds": stage.status.get("seconds"),
    }
    if stage.status.get("skipped"):
        out["skipped"] = stage.status["skipped"]
    out["config"] = stage.config
    return out


def stage_times(loaded: dict[str, list[RunData]]) -> list[dict[str, Any]]:
    """Wall time of every finished stage (stage.json `seconds`), in run order."""
    rows = []
    for arm, runs in loaded.items():
        for run in runs:
            for name, stage in run.stages.items():
                row = {
                    "arm": arm,
                    "repeat": run.repeat,
                    "stage": name,
                    "seconds": stage.status.get("seconds"),
                    "complete": bool(stage.status.get("complete", True)),
                }
                if stage.status.get("skipped"):
                    row["skipped"] = stage.status["skipped"]
                rows.append(row)
    return rows


def probe_curves(loaded: dict[str, list[RunData]], study_dir: Path) -> list[dict[str, Any]]:
    """Each arm's linear-probe curves figure (the first repeat's), where it exists."""
    from tempo_cli.evaluate.protocol import CURVES_FIGURE

    out = []
    for arm, runs in loaded.items():
        for run in runs:
            stage = run.stages.get("linear")
            if stage is not None and (study_dir / stage.dir / CURVES_FIGURE).is_file():
                out.append({"arm": arm, "path": f"{stage.dir}/{CURVES_FIGURE}"})
                break
    return out


def versions() -> dict[str, str]:
    """Versions of tempo, torch, torchvision and Python (the appendix)."""
    import torch
    import torchvision

    from tempo_cli import __version__

    return {
        "tempo": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def device_text(name: str) -> str:
    """The study's device resolved here ("cuda (NVIDIA H200)", "cpu", ...)."""
    import torch

    from tempo_cli.errors import TempoError, UsageError

    try:
        from tempo_cli.runtime import resolve_device

        device = resolve_device(name)
    except (TempoError, UsageError):  # the report still names what was asked for
        return str(name)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def is_timing(key: str) -> bool:
    """Whether a study.json key holds a timing (it differs between two runs of a study)."""
    return key == "seconds" or key.endswith("_seconds") or key == "pairs_per_s"


def without_timings(obj: Any, root: str) -> Any:
    """study.json (or any part) without its timings, the path `root` (the runs folder, or
    the folder above it) written as `<root>`: what two runs of a study must agree on."""
    if isinstance(obj, dict):
        return {k: without_timings(v, root) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [without_timings(v, root) for v in obj]
    return obj.replace(root, "<root>") if isinstance(obj, str) else obj
