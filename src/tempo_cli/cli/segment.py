"""`tempo segment`: options -> SegmentSettings -> tempo_cli.segment.run (no torch here)."""

from __future__ import annotations

from typing import Annotated, Any

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command
from tempo_cli.cli.options import option
from tempo_cli.settings.segment import SegmentSettings

_DATA = "Data and model"
_TRAIN = "Schedule (SPEC.md defaults)"
_EVAL = "Evaluation"
_RUN = "Run"


def _opt(name: str, *decls: str, panel: str) -> Any:
    return option(SegmentSettings, name, *decls, panel=panel)


def segment(
    path: Annotated[list[str] | None, _opt("path", "--path", panel=_DATA)] = None,
    data: Annotated[str | None, _opt("data", panel=_DATA)] = None,
    engine: Annotated[str | None, _opt("engine", panel=_DATA)] = None,
    backbone: Annotated[str | None, _opt("backbone", panel=_DATA)] = None,
    trainable_layers: Annotated[int | None, _opt("trainable_layers", panel=_DATA)] = None,
    norm: Annotated[str | None, _opt("norm", panel=_DATA)] = None,
    max_iter: Annotated[int | None, _opt("max_iter", panel=_TRAIN)] = None,
    eval_period: Annotated[int | None, _opt("eval_period", panel=_TRAIN)] = None,
    batch_size: Annotated[int | None, _opt("batch_size", panel=_TRAIN)] = None,
    lr: Annotated[float | None, _opt("lr", panel=_TRAIN)] = None,
    momentum: Annotated[float | None, _opt("momentum", panel=_TRAIN)] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay", panel=_TRAIN)] = None,
    warmup_iters: Annotated[int | None, _opt("warmup_iters", panel=_TRAIN)] = None,
    image_size: Annotated[int | None, _opt("image_size", panel=_TRAIN)] = None,
    augment: Annotated[bool | None, _opt("augment", "--augment/--no-augment", panel=_TRAIN)] = None,
    roi_batch_size: Annotated[int | None, _opt("roi_batch_size", panel=_TRAIN)] = None,
    proposals: Annotated[int | None, _opt("proposals", panel=_TRAIN)] = None,
    train_images: Annotated[int | None, _opt("train_images", panel=_TRAIN)] = None,
    score_thresh: Annotated[float | None, _opt("score_thresh", panel=_EVAL)] = None,
    eval_score_thresh: Annotated[float | None, _opt("eval_score_thresh", panel=_EVAL)] = None,
    eval_images: Annotated[int | None, _opt("eval_images", panel=_EVAL)] = None,
    vis_images: Annotated[int | None, _opt("vis_images", panel=_EVAL)] = None,
    resume: Annotated[str | None, _opt("resume", panel=_RUN)] = None,
    seed: Annotated[int | None, _opt("seed", panel=_RUN)] = None,
    device: Annotated[str | None, _opt("device", panel=_RUN)] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train Mask R-CNN from a backbone and measure COCO bbox/segm AP during training."""
    values: dict[str, Any] = dict(locals())
    if not values["path"]:
        values["path"] = None  # not given: environment / TOML may fill it

    from tempo_cli.segment import run  # lazy: keeps `tempo --help` free of torch

    run_command(SegmentSettings, values, run)
