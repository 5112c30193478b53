"""`tempo segment`: options -> SegmentSettings -> tempo_cli.segment.run (no torch here)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command

_DATA = "Data and model"
_TRAIN = "Schedule (SPEC.md defaults)"
_EVAL = "Evaluation"
_RUN = "Run"


def segment(
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Backbone checkpoint: a file (any format `tempo` reads, detectron2 .pkl "
            "included), a name in the model directory, random or imagenet. Repeat to compare "
            "backbones on the same schedule.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="COCO instances dataset (annotations/instances_{Train,Test}.json + images/): "
            "a name (ASL_mask, demo) or a folder. \\[default: ASL_mask]",
            rich_help_panel=_DATA,
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="torchvision (built in) or detectron2 (optional, installed separately). "
            "\\[default: torchvision]",
            rich_help_panel=_DATA,
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="ResNet depth for --path random|imagenet. \\[default: resnet50]",
            rich_help_panel=_DATA,
        ),
    ] = None,
    trainable_layers: Annotated[
        int | None,
        typer.Option(
            help="ResNet stages trained, 0-5 (3 = stem and res2 frozen, detectron2's "
            "FREEZE_AT=2). \\[default: 3; 5 for random]",
            rich_help_panel=_DATA,
        ),
    ] = None,
    norm: Annotated[
        str | None,
        typer.Option(
            help="Backbone BatchNorm: frozen, batch or auto (frozen unless --path random). "
            "\\[default: auto]",
            rich_help_panel=_DATA,
        ),
    ] = None,
    max_iter: Annotated[
        int | None,
        typer.Option(help="Training iterations. \\[default: 15000]", rich_help_panel=_TRAIN),
    ] = None,
    eval_period: Annotated[
        int | None,
        typer.Option(
            help="Evaluate and checkpoint every N iterations. \\[default: 1000]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch. \\[default: 5]", rich_help_panel=_TRAIN)
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Base learning rate (no decay). \\[default: 0.00025]", rich_help_panel=_TRAIN
        ),
    ] = None,
    momentum: Annotated[
        float | None, typer.Option(help="SGD momentum. \\[default: 0.9]", rich_help_panel=_TRAIN)
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="Weight decay (none on norm layers). \\[default: 0.0001]", rich_help_panel=_TRAIN
        ),
    ] = None,
    warmup_iters: Annotated[
        int | None,
        typer.Option(
            help="Linear lr warm-up iterations. \\[default: 1000]", rich_help_panel=_TRAIN
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Shorter image side in pixels (train and test). \\[default: detectron2's "
            "640-800 train / 800 test]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Random horizontal flips in training. \\[default: augment]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    roi_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Regions sampled per image for the box/mask heads (detectron2 "
            "ROI_HEADS.BATCH_SIZE_PER_IMAGE). \\[default: 512]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    proposals: Annotated[
        int | None,
        typer.Option(
            help="RPN proposals kept per image after NMS, train and test (detectron2 "
            "POST_NMS_TOPK_*). \\[default: 1000]",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    train_images: Annotated[
        int | None,
        typer.Option(
            help="Use only the first N annotated training images (quick checks).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    score_thresh: Annotated[
        float | None,
        typer.Option(
            help="Score threshold of the final evaluation. \\[default: 0.7]", rich_help_panel=_EVAL
        ),
    ] = None,
    eval_score_thresh: Annotated[
        float | None,
        typer.Option(
            help="Score threshold of the periodic evaluations. \\[default: 0.05]",
            rich_help_panel=_EVAL,
        ),
    ] = None,
    eval_images: Annotated[
        int | None,
        typer.Option(
            help="Evaluate on the first N test images only. \\[default: all]", rich_help_panel=_EVAL
        ),
    ] = None,
    vis_images: Annotated[
        int | None,
        typer.Option(
            help="Test images drawn with their predicted masks. \\[default: 4]",
            rich_help_panel=_EVAL,
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue from runs/<name>/last.pt (its iteration, optimizer, RNG).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed. \\[default: 0]", rich_help_panel=_RUN)
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto, cpu, cuda or mps. \\[default: auto]", rich_help_panel=_RUN),
    ] = None,
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
    from tempo_cli.settings.segment import SegmentSettings

    run_command(SegmentSettings, values, run)


def register(app: typer.Typer) -> None:
    """Attach `tempo segment` to the application."""
    app.command("segment")(segment)
