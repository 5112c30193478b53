"""`tempo eval linear | semisup | knn`: options -> settings -> tempo_cli.evaluate.run.

No torch here: the core is imported inside each command so `tempo --help` stays fast.
"""

from __future__ import annotations

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
from tempo_cli.cli.data import GroupByOpt, SplitFractionsOpt, SplitSeedOpt
from tempo_cli.cli.options import option
from tempo_cli.settings.evaluate import (
    EvalHeadSettings,
    EvalKnnSettings,
    EvalLinearSettings,
    EvalSemisupSettings,
    EvalSettings,
)

eval_app = typer.Typer(
    name="eval",
    help="Measure features: linear probe, fine-tuning (semisup) or kNN, few-shot sweeps.",
    no_args_is_help=True,
)

_M = "Models and data"
_P = "Protocol"

PathOpt = Annotated[list[str] | None, option(EvalSettings, "path", "--path", panel=_M)]
DataOpt = Annotated[str | None, option(EvalSettings, "data", panel=_M)]
SamplesOpt = Annotated[str | None, option(EvalSettings, "samples_pc", "--samples-pc", panel=_M)]
SamplesAlias = Annotated[
    str | None, typer.Option("--samples_pc", hidden=True, help="Same as --samples-pc.")
]
BackboneOpt = Annotated[str | None, option(EvalSettings, "backbone", panel=_M)]
ImageSizeOpt = Annotated[
    str | None, option(EvalSettings, "image_size", panel=_M, metavar="INT|auto")
]
RunsOpt = Annotated[int | None, option(EvalHeadSettings, "runs", panel=_P)]
LrOpt = Annotated[float | None, option(EvalHeadSettings, "lr", panel=_P)]
LrGridOpt = Annotated[str | None, option(EvalLinearSettings, "lr", panel=_P, metavar="LR[,LR...]")]
ResampleOpt = Annotated[
    bool | None, option(EvalHeadSettings, "resample_labels", "--resample-labels", panel=_M)
]
BnOpt = Annotated[str | None, option(EvalSettings, "bn_stats", panel=_P)]
BnBatchOpt = Annotated[
    str | None, option(EvalSettings, "bn_batch_size", panel=_P, metavar="TRAIN,TEST|auto")
]
SaveOpt = Annotated[str | None, option(EvalHeadSettings, "save_model", "--save-model", panel=_P)]
SaveAtOpt = Annotated[
    str | None,
    option(EvalHeadSettings, "save_samples_pc", "--save-samples-pc", panel=_P, metavar="N|full"),
]
SaveAlias = Annotated[
    str | None, typer.Option("--save_model", hidden=True, help="Same as --save-model.")
]
SeedOpt = Annotated[int | None, option(EvalSettings, "seed", panel=_P)]
DeviceOpt = Annotated[str | None, option(EvalSettings, "device", panel=_P)]


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
    resample_labels: ResampleOpt = None,
    runs: RunsOpt = None,
    iterations: Annotated[int | None, option(EvalLinearSettings, "iterations", panel=_P)] = None,
    batch_size: Annotated[int | None, option(EvalLinearSettings, "batch_size", panel=_P)] = None,
    lr: LrGridOpt = None,
    weight_decay: Annotated[
        float | None, option(EvalLinearSettings, "weight_decay", panel=_P)
    ] = None,
    bn_stats: BnOpt = None,
    bn_batch_size: BnBatchOpt = None,
    save_model: SaveOpt = None,
    save_model_ref: SaveAlias = None,
    save_samples_pc: SaveAtOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """Linear probe on frozen features: all runs trained at once, test accuracy every step."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_linear  # lazy: keeps `tempo --help` free of torch

    run_command(EvalLinearSettings, values, run_linear)


@eval_app.command("semisup")
def semisup(
    path: PathOpt = None,
    data: DataOpt = None,
    samples_pc: SamplesOpt = None,
    samples_pc_ref: SamplesAlias = None,
    backbone: BackboneOpt = None,
    image_size: ImageSizeOpt = None,
    resample_labels: ResampleOpt = None,
    runs: RunsOpt = None,
    iterations: Annotated[int | None, option(EvalSemisupSettings, "iterations", panel=_P)] = None,
    batch_size: Annotated[int | None, option(EvalSemisupSettings, "batch_size", panel=_P)] = None,
    lr: LrOpt = None,
    weight_decay: Annotated[
        float | None, option(EvalSemisupSettings, "weight_decay", panel=_P)
    ] = None,
    eval_every: Annotated[int | None, option(EvalSemisupSettings, "eval_every", panel=_P)] = None,
    bn_stats: BnOpt = None,
    bn_batch_size: BnBatchOpt = None,
    save_model: SaveOpt = None,
    save_model_ref: SaveAlias = None,
    save_samples_pc: SaveAtOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """Fine-tune the whole network with a fresh linear head (the semi-supervised protocol)."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_semisup  # lazy: keeps `tempo --help` free of torch

    run_command(EvalSemisupSettings, values, run_semisup)


@eval_app.command("knn")
def knn(
    path: PathOpt = None,
    data: DataOpt = None,
    samples_pc: SamplesOpt = None,
    samples_pc_ref: SamplesAlias = None,
    k: Annotated[int | None, option(EvalKnnSettings, "k", panel=_P)] = None,
    temperature: Annotated[float | None, option(EvalKnnSettings, "temperature", panel=_P)] = None,
    backbone: BackboneOpt = None,
    image_size: ImageSizeOpt = None,
    bn_stats: BnOpt = None,
    bn_batch_size: BnBatchOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """Weighted k-nearest-neighbour accuracy on L2-normalised frozen features."""
    values = _merge_aliases(dict(locals()))

    from tempo_cli.evaluate.run import run_knn  # lazy: keeps `tempo --help` free of torch

    run_command(EvalKnnSettings, values, run_knn)
