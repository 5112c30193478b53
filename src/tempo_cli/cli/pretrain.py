"""`tempo pretrain`: parse options -> PretrainSettings -> tempo_cli.pretrain.run (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tempo_cli.cli.common import (
    ConfigOpt,
    DebugOpt,
    NameOpt,
    QuietOpt,
    RecipeOpt,
    run_command,
)
from tempo_cli.cli.options import option
from tempo_cli.settings.pretrain import PretrainSettings

_TRAIN = "Training"
_MODEL = "Model"
_RUN = "Run"
_MONITOR = "Monitoring"


def _opt(name: str, *decls: str, panel: str, **kwargs: Any) -> Any:
    return option(PretrainSettings, name, *decls, panel=panel, **kwargs)


def pretrain(
    data: Annotated[str | None, _opt("data", panel=_TRAIN)] = None,
    epochs: Annotated[int | None, _opt("epochs", panel=_TRAIN)] = None,
    lr: Annotated[float | None, _opt("lr", panel=_TRAIN)] = None,
    l: Annotated[float | None, _opt("l", "--l", "--lambda", panel=_TRAIN)] = None,  # noqa: E741
    loss_std: Annotated[str | None, _opt("loss_std", panel=_TRAIN)] = None,
    pdf: Annotated[str | None, _opt("pdf", panel=_TRAIN)] = None,
    proximity: Annotated[float | None, _opt("proximity", panel=_TRAIN)] = None,
    pairs: Annotated[str | None, _opt("pairs", panel=_TRAIN)] = None,
    augment: Annotated[str | None, _opt("augment", panel=_TRAIN)] = None,
    crop_scale: Annotated[float | None, _opt("crop_scale", panel=_TRAIN)] = None,
    batch_size: Annotated[int | None, _opt("batch_size", panel=_TRAIN)] = None,
    image_size: Annotated[str | None, _opt("image_size", panel=_TRAIN, metavar="INT|auto")] = None,
    optimizer: Annotated[str | None, _opt("optimizer", panel=_TRAIN)] = None,
    momentum: Annotated[float | None, _opt("momentum", panel=_TRAIN)] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay", panel=_TRAIN)] = None,
    max_steps: Annotated[int | None, _opt("max_steps", panel=_TRAIN)] = None,
    seed: Annotated[int | None, _opt("seed", panel=_TRAIN)] = None,
    backbone: Annotated[str | None, _opt("backbone", panel=_MODEL)] = None,
    init: Annotated[str | None, _opt("init", panel=_MODEL)] = None,
    save_model: Annotated[str | None, _opt("save_model", "--save-model", panel=_MODEL)] = None,
    save_model_ref: Annotated[
        str | None, typer.Option("--save_model", hidden=True, help="Same as --save-model.")
    ] = None,
    eval: Annotated[bool | None, _opt("eval", "--eval/--no-eval", panel=_MODEL)] = None,
    bn_stats: Annotated[str | None, _opt("bn_stats", panel=_MODEL)] = None,
    baseline: Annotated[bool | None, _opt("baseline", "--baseline", panel=_MODEL)] = None,
    monitor: Annotated[str | None, _opt("monitor", panel=_MONITOR)] = None,
    monitor_data: Annotated[str | None, _opt("monitor_data", panel=_MONITOR)] = None,
    monitor_samples_pc: Annotated[int | None, _opt("monitor_samples_pc", panel=_MONITOR)] = None,
    monitor_every: Annotated[int | None, _opt("monitor_every", panel=_MONITOR)] = None,
    monitor_pairs: Annotated[int | None, _opt("monitor_pairs", panel=_MONITOR)] = None,
    keep: Annotated[str | None, _opt("keep", panel=_MONITOR)] = None,
    resume: Annotated[Path | None, _opt("resume", panel=_RUN)] = None,
    device: Annotated[str | None, _opt("device", panel=_RUN)] = None,
    workers: Annotated[int | None, _opt("workers", panel=_RUN)] = None,
    checkpoint_minutes: Annotated[float | None, _opt("checkpoint_minutes", panel=_RUN)] = None,
    precision: Annotated[str | None, _opt("precision", panel=_RUN)] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """Pre-train a backbone with Barlow Twins on pairs of temporally close frames.

    Writes runs/<name>/ (config.json, metrics.json, TensorBoard logs, last.pt to --resume).
    Multi-GPU / multi-node: torchrun --nproc-per-node N -m tempo_cli pretrain ...
    """
    values: dict[str, Any] = dict(locals())
    alias = values.pop("save_model_ref")
    if values["save_model"] is None:
        values["save_model"] = alias

    from tempo_cli.pretrain import run  # lazy: keeps `tempo --help` free of torch

    run_command(PretrainSettings, values, run)
