"""`tempo explain lrp | adversarial | relevance`: options -> settings -> tempo_cli.explain.

No torch here: the core is imported inside each command so `tempo --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command
from tempo_cli.cli.data import GroupByOpt, SplitFractionsOpt, SplitSeedOpt
from tempo_cli.cli.options import option
from tempo_cli.settings.explain import (
    ExplainAdversarialSettings,
    ExplainLrpSettings,
    ExplainRelevanceSettings,
    ExplainSettings,
)

explain_app = typer.Typer(
    name="explain",
    help="What the features look at: LRP heatmaps, noise robustness, relevance on the hand.",
    no_args_is_help=True,
)

_M = "Models and data"
_A = "Attribution"

PathOpt = Annotated[str | None, option(ExplainSettings, "path", panel=_M)]
CompareOpt = Annotated[str | None, option(ExplainSettings, "compare", panel=_M)]
DataOpt = Annotated[str | None, option(ExplainSettings, "data", panel=_M)]
SplitOpt = Annotated[str | None, option(ExplainSettings, "split", panel=_M)]
OutOpt = Annotated[str | None, option(ExplainSettings, "out", panel=_M)]
MethodOpt = Annotated[str | None, option(ExplainSettings, "method", panel=_A)]
ImageSizeOpt = Annotated[
    str | None, option(ExplainSettings, "image_size", panel=_A, metavar="INT|auto")
]
BatchSizeOpt = Annotated[int | None, option(ExplainSettings, "batch_size", panel=_A)]
DeviceOpt = Annotated[str | None, option(ExplainSettings, "device", panel=_A)]
SeedOpt = Annotated[int | None, option(ExplainSettings, "seed", panel=_A)]
CmapOpt = Annotated[str | None, option(ExplainLrpSettings, "cmap", panel=_A)]
ImagesOpt = Annotated[str | None, option(ExplainLrpSettings, "images", panel=_M)]


@explain_app.command("lrp")
def lrp(
    path: PathOpt = None,
    compare: CompareOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    images: ImagesOpt = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    cmap: CmapOpt = None,
    sheets: Annotated[
        bool | None, option(ExplainLrpSettings, "sheets", "--sheets/--no-sheets")
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A heatmap PNG per image and model (<LETTER>_<model>_<index>.png) + contact sheets."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.lrp import run  # lazy: keeps `tempo --help` free of torch

    run_command(ExplainLrpSettings, values, run)


@explain_app.command("adversarial")
def adversarial(
    path: PathOpt = None,
    compare: CompareOpt = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    levels: Annotated[str | None, option(ExplainAdversarialSettings, "levels")] = None,
    attack: Annotated[str | None, option(ExplainAdversarialSettings, "attack")] = None,
    steps: Annotated[int | None, option(ExplainAdversarialSettings, "steps")] = None,
    figures: Annotated[int | None, option(ExplainAdversarialSettings, "figures")] = None,
    noise: Annotated[str | None, option(ExplainAdversarialSettings, "noise")] = None,
    noise_scale: Annotated[float | None, option(ExplainAdversarialSettings, "noise_scale")] = None,
    images: ImagesOpt = None,
    cmap: CmapOpt = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Accuracy and heatmaps under random colour noise (the study) or FGSM/PGD attacks."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.adversarial import run  # lazy: keeps `tempo --help` free of torch

    run_command(ExplainAdversarialSettings, values, run)


@explain_app.command("relevance")
def relevance(
    path: PathOpt = None,
    compare: CompareOpt = None,
    masks: Annotated[str | None, option(ExplainRelevanceSettings, "masks", panel=_M)] = None,
    data: DataOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    method: MethodOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Relative relevance mean(R*M)/mean(R) inside the hand mask, per image and model."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.explain.relevance import run  # lazy: keeps `tempo --help` free of torch

    run_command(ExplainRelevanceSettings, values, run)
