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
from typing import Any

from tempo_cli import places
from tempo_cli.data.coco import check_layout, load_coco_dataset
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.settings.segment import SegmentSettings

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
        stem = Path(p).stem if p not in ("random", "imagenet") else p
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


def run(settings: SegmentSettings) -> dict[str, Any]:
    """Run `tempo segment` and return the metrics written to `runs/<name>/metrics.json`."""
    _check(settings)
    if settings.engine == "detectron2":
        from tempo_cli.segment.detectron2_engine import require_detectron2

        require_detectron2()  # one-line TempoError when it is not installed
    from tempo_cli.runtime import resolve_device

    device = resolve_device(settings.device)
    root = resolve_segment_data(settings.data)
    train_split, test_split = load_coco_dataset(root)

    resume_state = None
    run_root: Path | None = None
    if settings.resume:
        if settings.engine == "torchvision":
            from tempo_cli.segment.train import load_checkpoint

            resume_state = load_checkpoint(settings.resume)
            if resume_state["category_ids"] != train_split.category_ids:
                raise TempoError(
                    f"{settings.resume} was trained on {len(resume_state['category_ids'])} "
                    f"categories, {root} has {len(train_split.category_ids)}; use the same --data"
                )
        ckpt = Path(settings.resume)
        for folder in (ckpt.parent, ckpt.parent.parent):  # last.pt, detectron2/model_*.pth
            if settings.name is None and (folder / "config.json").is_file():
                run_root = folder  # continue the run in its own folder
                break
    paths = settings.path or [str(resume_state["backbone"]) if resume_state else "resume"]

    run_dir = RunDir(settings, root=run_root)
    run_dir.save_config(settings)
    run_dir.update_metrics(engine=settings.engine, data=str(root))
    log(
        f"segment: {len(train_split.image_ids)} train / {len(test_split.image_ids)} test images, "
        f"{train_split.num_classes} categories from {root}; engine {settings.engine}; "
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
            sub.save_config(settings)
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
    train_split: Any,
    test_split: Any,
    run_dir: RunDir,
    device: Any,
    resume_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train and evaluate from one backbone with the chosen engine; returns its record."""
    from tempo_cli.runtime import seed_everything

    seed_everything(settings.seed)
    if settings.engine == "detectron2":
        from tempo_cli.segment.detectron2_engine import train_detectron2

        return train_detectron2(settings, path, root, train_split, test_split, run_dir, device)

    from tempo_cli.segment.model import ModelSpec
    from tempo_cli.segment.train import make_data, train_backbone

    data = make_data(root, train_split, test_split, settings.train_images, settings.eval_images)
    if resume_state is not None:
        saved = dict(resume_state["model_spec"])
        # Options that change speed, not the weights, follow the command line when given.
        for key in ("image_size", "roi_batch_size", "proposals"):
            if key in settings.model_fields_set:
                saved[key] = getattr(settings, key)
        spec = ModelSpec(**saved)
        body_state = None
    else:
        arch, body_state = backbone_state(path, settings.backbone)
        is_random = path == "random" and not Path(path).exists()
        spec = ModelSpec(
            arch=arch,
            num_classes=train_split.num_classes,
            image_size=settings.image_size,
            trainable_layers=settings.trainable_layers
            if settings.trainable_layers is not None
            else (5 if is_random else 3),
            frozen_bn={"frozen": True, "batch": False}.get(settings.norm, not is_random),
            roi_batch_size=settings.roi_batch_size,
            proposals=settings.proposals,
        )
        if spec.arch not in ("resnet18", "resnet34", "resnet50"):
            raise TempoError(f"{path}: a {spec.arch} backbone; Mask R-CNN takes ResNet-18/34/50")
        # Seeded again after the backbone is read (`random` draws from the RNG): the FPN
        # and the heads then start identical for every backbone of a comparison.
        seed_everything(settings.seed)
    return train_backbone(
        settings,
        data,
        run_dir,
        device,
        backbone=path,
        body_state=body_state,
        spec=spec,
        resume=resume_state,
    )


def backbone_state(path: str, arch: str) -> tuple[str, dict[str, Any]]:
    """(arch, torchvision-keyed ResNet state) of `--path` (any format models/ reads).

    `arch` (`--backbone`) only matters for `random` / `imagenet`.
    """
    from tempo_cli.models.checkpoint import load_resnet_state

    named = path in ("random", "imagenet") and not Path(path).exists()
    if not named and not places.resolve_checkpoint(path).exists():
        raise TempoError(
            f"--path {path}: not found (nor in {places.model_dir()}); give a checkpoint file, "
            "random, imagenet, or run `tempo download models`"
        )
    return load_resnet_state(path, arch if named else None)
