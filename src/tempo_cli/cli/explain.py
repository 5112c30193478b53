"""`tempo explain lrp | adversarial | relevance`: options -> settings -> tempo_cli.explain.

No torch here: the core is imported inside each command so `tempo --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command

explain_app = typer.Typer(
    name="explain",
    help="What the features look at: LRP heatmaps, noise robustness, relevance on the hand.",
    no_args_is_help=True,
)

_M = "Models and data"
_A = "Attribution"

PathOpt = Annotated[
    str | None,
    typer.Option(
        help="Classifier checkpoint (backbone + linear head, e.g. from `tempo eval linear "
        "--save-model`, or the reference tempo.pth): a file or a name in the model directory.",
        rich_help_panel=_M,
    ),
]
CompareOpt = Annotated[
    str | None,
    typer.Option(help="A second classifier to compare side by side.", rich_help_panel=_M),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset name or root with <split>/<CLASS>/. \\[default: asl]", rich_help_panel=_M
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option(help="Labelled split to explain. \\[default: test]", rich_help_panel=_M),
]
OutOpt = Annotated[
    str | None, typer.Option(help="Output folder. \\[default: runs/<name>/]", rich_help_panel=_M)
]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        help="lrp (zennit EpsilonPlusFlat), integrated-gradients or saliency (captum). "
        "\\[default: lrp]",
        rich_help_panel=_A,
    ),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Images resized (NEAREST) to this side. \\[default: 128]", rich_help_panel=_A
    ),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option(help="Images per batch. \\[default: 16]", rich_help_panel=_A)
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto, cpu, cuda or mps. \\[default: auto]", rich_help_panel=_A)
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed. \\[default: 0]", rich_help_panel=_A)]


@explain_app.command("lrp")
def lrp(
    path: PathOpt = None,
    compare: CompareOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    sheets: Annotated[
        bool | None,
        typer.Option("--sheets/--no-sheets", help="Contact sheet per class. \\[default: sheets]"),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A heatmap PNG per image and model (<LETTER>_<model>_<index>.png) + contact sheets."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.lrp import run  # lazy: keeps `tempo --help` free of torch
    from tempo_cli.settings.explain import ExplainLrpSettings

    run_command(ExplainLrpSettings, values, run)


@explain_app.command("adversarial")
def adversarial(
    path: PathOpt = None,
    compare: CompareOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated noise levels / L-inf budgets in [0, 1]. \\[default: noise "
            "0,0.1,0.2,0.3,0.4,0.5; fgsm/pgd 0,0.004,0.008,0.016,0.031,0.063]",
        ),
    ] = None,
    attack: Annotated[
        str | None,
        typer.Option(help="noise (the study), fgsm or pgd (captum.robust). \\[default: noise]"),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="PGD steps. \\[default: 10]")] = None,
    figures: Annotated[
        int | None,
        typer.Option(help="Per-image figures to draw (the first N images). \\[default: all]"),
    ] = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Accuracy and heatmaps under random colour noise (the study) or FGSM/PGD attacks."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.adversarial import run
    from tempo_cli.settings.explain import ExplainAdversarialSettings

    run_command(ExplainAdversarialSettings, values, run)


@explain_app.command("relevance")
def relevance(
    path: PathOpt = None,
    compare: CompareOpt = None,
    masks: Annotated[
        str | None,
        typer.Option(
            help="Folder of hand masks: <ID>_gtFine_color.png anywhere below, or <ID>.png. "
            "\\[default: <data>/masks, else the data root]",
            rich_help_panel=_M,
        ),
    ] = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Relative relevance mean(R*M)/mean(R) inside the hand mask, per image and model."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.relevance import run
    from tempo_cli.settings.explain import ExplainRelevanceSettings

    run_command(ExplainRelevanceSettings, values, run)


def register(app: typer.Typer) -> None:
    """Attach the `tempo explain` group to the application."""
    app.add_typer(explain_app, name="explain")
