"""`tempo segment`: Mask R-CNN transfer from one or several backbones (core entry `run`).

One `--path`: the run folder `runs/<name>/` holds config.json, metrics.json (`evals`,
`iterations_to_90pct_final_segm_AP`, `final`), TensorBoard events, `ap.png`,
`predictions.png` and the resumable `last.pt`.

Several `--path` (the comparison): each backbone trains on the same schedule (same seed:
same batches, flips and head initialisation) in `runs/<name>/<label>/` (a complete run
folder each), and `runs/<name>/` gets `segm_ap_comparison.png` (one line per backbone)
and metrics.json with `runs` (one record per backbone) plus the first backbone's `evals`
and `iterations_to_90pct_final_segm_AP` at the top level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli import places
from tempo_cli.data.coco import CocoSplit, check_layout, load_coco_dataset
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.settings.segment import SegmentSettings
from tempo_cli.training.resume import merge_resumed_settings

if TYPE_CHECKING:
    import torch

    from tempo_cli.training.state import TrainingState

#: Fields that describe how this invocation runs, not what is trained: `--resume` never
#: takes them from the checkpoint.
RUNTIME_FIELDS = frozenset({"name", "quiet", "debug", "resume", "device"})

# A dataset root of the ASL layout -> its instance-segmentation sibling.
_MASK_SIBLINGS = {"demo": "demo_mask", "ASL-big": "ASL_mask"}


def resolve_segment_data(value: str) -> Path:
    """`--data` -> a folder in the ASL_mask layout (`demo`/`demo_mask` generated on demand).

    A classification root (`demo`, `ASL-big`) maps to its mask sibling (`demo_mask`,
    `ASL_mask`) when that exists.
    """
    from tempo_cli.data.datasets import resolve_dataset

    if value.lower() in ("demo", "demo_mask") and not Path(value).exists():
        root = resolve_dataset("demo").parent / "demo_mask"
    else:
        root = resolve_dataset(value)
    if root.is_dir() and not (root / "annotations").is_dir():
        sibling = _MASK_SIBLINGS.get(root.name)
        if sibling and (root.parent / sibling / "annotations").is_dir():
            root = root.parent / sibling
    if not root.is_dir():
        raise TempoError(f"--data {value}: {root} is not a folder (want the ASL_mask layout)")
    check_layout(root)
    return root


def _labels(paths: list[str]) -> list[str]:
    """Short unique folder names for the backbones of a comparison."""
    out: list[str] = []
    for p in paths:
        stem = p if places.is_named_baseline(p) else Path(p).stem
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "backbone"
        base, k = label, 2
        while label in out:
            label, k = f"{base}-{k}", k + 1
        out.append(label)
    return out


def _check(settings: SegmentSettings) -> None:
    if not settings.path and not settings.resume:
        raise UsageError("--path", None, "required: a checkpoint, random or imagenet")
    if settings.resume and len(settings.path) > 1:
        raise UsageError("--resume", settings.resume, "continues one run; give at most one --path")
    if len(set(settings.path)) != len(settings.path):
        raise UsageError("--path", settings.path, "each backbone at most once")


def _resumed(
    settings: SegmentSettings,
) -> tuple[SegmentSettings, TrainingState | None, Path | None]:
    """`--resume`: (the run's saved settings with the options given now, the engine's
    resume state, the run folder to continue in: the one holding the checkpoint)."""
    from tempo_cli.segment.engines import ENGINES

    if not settings.resume:
        return settings, None, None
    ckpt = Path(settings.resume).expanduser()
    saved, state = ENGINES[settings.engine].restore(ckpt)
    settings = merge_resumed_settings(settings, saved, RUNTIME_FIELDS)
    # Both engines write the same envelope; the payload says which one (none: torchvision).
    written_by = state.payload.get("engine", "torchvision")
    if settings.engine != written_by:
        raise UsageError("--engine", settings.engine, f"{written_by}, the engine that wrote {ckpt}")
    run_root = None
    for folder in (ckpt.parent, ckpt.parent.parent):  # the run folder holding last.pt
        if settings.name is None and (folder / "config.json").is_file():
            run_root = folder  # continue the run in its own folder
            break
    return settings, state, run_root


def run(settings: SegmentSettings) -> dict[str, Any]:
    """Run `tempo segment` and return the metrics written to `runs/<name>/metrics.json`."""
    from tempo_cli.runtime import resolve_device
    from tempo_cli.segment.engines import ENGINES

    _check(settings)
    ENGINES[settings.engine].require()  # one-line TempoError when it is not installed
    settings, resume_state, run_root = _resumed(settings)
    engine = ENGINES[settings.engine]
    engine.require()  # again: a resumed run takes its engine from the checkpoint
    device = resolve_device(settings.device)
    root = resolve_segment_data(settings.data)
    train_split, test_split = load_coco_dataset(root)
    paths = settings.path or ["resume"]

    run_dir = RunDir(settings, root=run_root)
    run_dir.save_config(settings)
    run_dir.update_metrics(engine=engine.name, data=str(root))
    log(
        f"segment: {len(train_split.image_ids)} train / {len(test_split.image_ids)} test images, "
        f"{train_split.num_classes} categories from {root}; engine {engine.name}; "
        f"run folder {run_dir.path}",
        settings.quiet,
    )
    with run_dir:
        if len(paths) == 1:
            _one(settings, paths[0], root, train_split, test_split, run_dir, device, resume_state)
            return run_dir.metrics
        records = []
        for label, path in zip(_labels(paths), paths, strict=True):
            sub = RunDir(settings, root=run_dir.path / label)
            sub.save_config(settings.model_copy(update={"path": [path]}))  # resumable alone
            with sub:
                record = _one(settings, path, root, train_split, test_split, sub, device, None)
            records.append({"label": label, "run_dir": str(sub.path), **record})
            _write_comparison(run_dir, records)
        return run_dir.metrics


def _write_comparison(run_dir: RunDir, records: list[dict[str, Any]]) -> None:
    from tempo_cli.segment.plots import comparison_figure

    first = records[0]
    run_dir.update_metrics(
        evals=first["evals"],
        iterations_to_90pct_final_segm_AP=first["iterations_to_90pct_final_segm_AP"],
        runs=[{k: v for k, v in r.items() if k != "last_checkpoint"} for r in records],
    )
    run_dir.save_figure(comparison_figure(records), "segm_ap_comparison.png")


def _one(
    settings: SegmentSettings,
    path: str,
    root: Path,
    train_split: CocoSplit,
    test_split: CocoSplit,
    run_dir: RunDir,
    device: torch.device,
    resume_state: TrainingState | None,
) -> dict[str, Any]:
    """Train and evaluate from one backbone with the chosen engine; returns its record."""
    from tempo_cli.runtime import seed_everything
    from tempo_cli.segment.engines import ENGINES
    from tempo_cli.segment.loop import SegmentJob

    seed_everything(settings.seed)
    job = SegmentJob(settings, path, root, train_split, test_split, run_dir, device)
    return ENGINES[settings.engine].train(job, resume_state)


def backbone_state(path: str, arch: str) -> tuple[str, dict[str, Any]]:
    """(arch, torchvision-keyed ResNet state) of `--path` (any format models/ reads).

    `arch` (`--backbone`) only matters for `random` / `imagenet`.
    """
    from tempo_cli.models.checkpoint import load_resnet_state

    named = places.is_named_baseline(path)
    if not named and not places.resolve_checkpoint(path).exists():
        raise TempoError(
            f"--path {path}: not found (nor in {places.model_dir()}); give a checkpoint file, "
            "random, imagenet, or run `tempo download models`"
        )
    return load_resnet_state(path, arch if named else None)
