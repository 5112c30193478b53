"""`tempo eval linear | semisup | knn`: options -> settings -> tempo_cli.evaluate.run.

No torch here: the core is imported inside each command so `tempo --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command

eval_app = typer.Typer(
    name="eval",
    help="Measure features: linear probe, fine-tuning (semisup) or kNN, few-shot sweeps.",
    no_args_is_help=True,
)

_M = "Models and data"
_P = "Protocol"

PathOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--path",
        help="Checkpoint to evaluate: a file, a name in the model dir, imagenet or random. "
        "Repeat to compare several.",
        rich_help_panel=_M,
        show_default=False,
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset name or root with train[-N]/ and test/. \\[default: asl]", rich_help_panel=_M
    ),
]
SamplesOpt = Annotated[
    str | None,
    typer.Option(
        "--samples-pc",
        help="Labelled samples per class: split train-N; a comma list sweeps "
        "(e.g. 1,5,10,15,20; 'full' = train). \\[default: full]",
        rich_help_panel=_M,
    ),
]
SamplesAlias = Annotated[
    str | None, typer.Option("--samples_pc", hidden=True, help="Same as --samples-pc.")
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        help="Architecture of --path random|imagenet. \\[default: resnet34]", rich_help_panel=_M
    ),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Shorter side resized to this, then center crop. \\[default: 128]", rich_help_panel=_M
    ),
]
RunsOpt = Annotated[
    int | None,
    typer.Option(help="Repetitions with fresh heads. \\[default: 10]", rich_help_panel=_P),
]
LrOpt = Annotated[
    float | None, typer.Option(help="SGD learning rate. \\[default: 0.01]", rich_help_panel=_P)
]
BnOpt = Annotated[
    str | None,
    typer.Option(
        help="BatchNorm statistics: running (eval mode, standard) or batch (the reference: "
        "train mode). \\[default: running]",
        rich_help_panel=_P,
    ),
]
SaveOpt = Annotated[
    str | None,
    typer.Option(
        "--save-model",
        help="Write backbone + the best run's linear head + class names here (a classifier "
        "for `tempo explain`); several results get -<checkpoint>-<N> suffixes.",
        rich_help_panel=_P,
    ),
]
SaveAlias = Annotated[
    str | None, typer.Option("--save_model", hidden=True, help="Same as --save-model.")
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed. \\[default: 0]", rich_help_panel=_P)]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto, cpu, cuda or mps. \\[default: auto]", rich_help_panel=_P)
]


def _merge_aliases(values: dict[str, Any]) -> dict[str, Any]:
    """Fold the hidden underscore spellings into their options (dash spelling wins)."""
    values = dict(values)
    for key, alias in (("samples_pc", "samples_pc_ref"), ("save_model", "save_model_ref")):
        if alias in values:
            ref = values.pop(alias)
            if values.get(key) is None:
                values[key] = ref
    return values


@eval_app.command("linear")
def linear(
    path: PathOpt = None,
    data: DataOpt = None,
    samples_pc: SamplesOpt = None,
    samples_pc_ref: SamplesAlias = None,
    backbone: BackboneOpt = None,
    image_size: ImageSizeOpt = None,
    runs: RunsOpt = None,
    iterations: Annotated[
        int | None, typer.Option(help="SGD steps per run. \\[default: 3000]", rich_help_panel=_P)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Training features per step. \\[default: 24]", rich_help_panel=_P),
    ] = None,
    lr: LrOpt = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="SGD weight decay. \\[default: 0.0001]", rich_help_panel=_P)
    ] = None,
    bn_stats: BnOpt = None,
    save_model: SaveOpt = None,
    save_model_ref: SaveAlias = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Linear probe on frozen features: all runs trained at once, test accuracy every step."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_linear  # lazy: keeps `tempo --help` free of torch
    from tempo_cli.settings.evaluate import EvalLinearSettings

    run_command(EvalLinearSettings, values, run_linear)


@eval_app.command("semisup")
def semisup(
    path: PathOpt = None,
    data: DataOpt = None,
    samples_pc: SamplesOpt = None,
    samples_pc_ref: SamplesAlias = None,
    backbone: BackboneOpt = None,
    image_size: ImageSizeOpt = None,
    runs: RunsOpt = None,
    iterations: Annotated[
        int | None, typer.Option(help="SGD steps per run. \\[default: 200]", rich_help_panel=_P)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Training images per step. \\[default: 128]", rich_help_panel=_P),
    ] = None,
    lr: LrOpt = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="SGD weight decay. \\[default: 0]", rich_help_panel=_P)
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(help="Test accuracy every K steps. \\[default: 1]", rich_help_panel=_P),
    ] = None,
    bn_stats: BnOpt = None,
    save_model: SaveOpt = None,
    save_model_ref: SaveAlias = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune the whole network with a fresh linear head (the semi-supervised protocol)."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_semisup
    from tempo_cli.settings.evaluate import EvalSemisupSettings

    run_command(EvalSemisupSettings, values, run_semisup)


@eval_app.command("knn")
def knn(
    path: PathOpt = None,
    data: DataOpt = None,
    samples_pc: SamplesOpt = None,
    samples_pc_ref: SamplesAlias = None,
    k: Annotated[
        int | None, typer.Option(help="Neighbours. \\[default: 20]", rich_help_panel=_P)
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Vote weight exp(similarity / T). \\[default: 0.07]", rich_help_panel=_P),
    ] = None,
    backbone: BackboneOpt = None,
    image_size: ImageSizeOpt = None,
    bn_stats: BnOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Weighted k-nearest-neighbour accuracy on L2-normalised frozen features."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_knn
    from tempo_cli.settings.evaluate import EvalKnnSettings

    run_command(EvalKnnSettings, values, run_knn)


def register(app: typer.Typer) -> None:
    """Add the `tempo eval` group to the application."""
    app.add_typer(eval_app, name="eval")
