"""`tempo pretrain`: parse options -> PretrainSettings -> tempo_cli.pretrain.run (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command

_TRAIN = "Training"
_MODEL = "Model"
_RUN = "Run"


def pretrain(
    data: Annotated[
        str | None,
        typer.Option(
            help="Dataset name or root with frames/, a folder of frames, a video file or a "
            "folder of videos. \\[default: asl]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs. \\[default: 15]", rich_help_panel=_TRAIN)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate. \\[default: 0.001]", rich_help_panel=_TRAIN)
    ] = None,
    l: Annotated[  # noqa: E741 - the reference's option name
        float | None,
        typer.Option(
            "--l",
            "--lambda",
            help="Barlow Twins off-diagonal weight lambda. \\[default: 0.001]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    pdf: Annotated[
        str | None,
        typer.Option(
            help="Partner pmf: uniform (tau) or normal (sigma). \\[default: uniform]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    proximity: Annotated[
        float | None,
        typer.Option(
            help="tau (uniform) or sigma (normal), in frames. \\[default: 30]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Pairs per step (global over all processes). \\[default: 200]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Frame side in pixels. \\[default: 128]", rich_help_panel=_TRAIN),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd or adamw. \\[default: sgd]", rich_help_panel=_TRAIN)
    ] = None,
    momentum: Annotated[
        float | None, typer.Option(help="SGD momentum. \\[default: 0.0]", rich_help_panel=_TRAIN)
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Weight decay. \\[default: 0.001]", rich_help_panel=_TRAIN)
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Stop after this many steps in all (resumable).", rich_help_panel=_TRAIN),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed: same seed -> same losses on CPU. \\[default: 0]", rich_help_panel=_TRAIN
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="resnet18, resnet34 or resnet50. \\[default: resnet34]", rich_help_panel=_MODEL
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Initial weights: imagenet, random or a checkpoint. \\[default: imagenet]",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    save_model: Annotated[
        str | None,
        typer.Option(
            "--save-model",
            help="Write the final model: a bare name goes to the model directory.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    save_model_ref: Annotated[
        str | None, typer.Option("--save_model", hidden=True, help="Same as --save-model.")
    ] = None,
    eval: Annotated[  # noqa: A002 - the reference's option name
        bool | None,
        typer.Option(
            "--eval/--no-eval",
            help="Linear evaluation after training (3 runs, batch 10, 3000 iterations).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    baseline: Annotated[
        bool | None,
        typer.Option(
            "--baseline", help="Skip training: the initial backbone alone.", rich_help_panel=_MODEL
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue from a resumable checkpoint (runs/<name>/last.pt).", rich_help_panel=_RUN
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto, cpu, cuda or mps. \\[default: auto]", rich_help_panel=_RUN),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Background threads preparing batches. \\[default: 1]", rich_help_panel=_RUN
        ),
    ] = None,
    checkpoint_minutes: Annotated[
        float | None,
        typer.Option(
            help="Also save last.pt every N minutes. \\[default: 10]", rich_help_panel=_RUN
        ),
    ] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
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
    from tempo_cli.settings.pretrain import PretrainSettings

    run_command(PretrainSettings, values, run)


def register(app: typer.Typer) -> None:
    """Attach `tempo pretrain` to the application."""
    app.command("pretrain")(pretrain)
