"""`tempo embed`: options -> EmbedSettings -> tempo_cli.embed.run.run_embed (no torch here)."""

from __future__ import annotations

from typing import Annotated, Any

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, RecipeOpt, run_command
from tempo_cli.cli.data import GroupByOpt, SplitFractionsOpt, SplitSeedOpt
from tempo_cli.cli.options import option
from tempo_cli.settings.embed import EmbedSettings

_M = "Models and data"
_F = "Features"
_O = "Outputs"


def _opt(name: str, *decls: str, panel: str, **kwargs: Any) -> Any:
    return option(EmbedSettings, name, *decls, panel=panel, **kwargs)


def embed(
    path: Annotated[list[str] | None, _opt("path", "--path", panel=_M)] = None,
    data: Annotated[str | None, _opt("data", panel=_M)] = None,
    split: Annotated[str | None, _opt("split", panel=_M)] = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    backbone: Annotated[str | None, _opt("backbone", panel=_M)] = None,
    image_size: Annotated[str | None, _opt("image_size", panel=_F, metavar="INT|auto")] = None,
    bn_stats: Annotated[str | None, _opt("bn_stats", panel=_F)] = None,
    bn_batch_size: Annotated[
        str | None, _opt("bn_batch_size", panel=_F, metavar="TRAIN,TEST|auto")
    ] = None,
    map: Annotated[bool | None, _opt("map", "--map", panel=_O)] = None,
    neighbours: Annotated[bool | None, _opt("neighbours", "--neighbours", panel=_O)] = None,
    projector: Annotated[bool | None, _opt("projector", "--projector", panel=_O)] = None,
    k: Annotated[int | None, _opt("k", panel=_O)] = None,
    queries: Annotated[int | None, _opt("queries", panel=_O)] = None,
    map_points: Annotated[int | None, _opt("map_points", panel=_O)] = None,
    seed: Annotated[int | None, _opt("seed", panel=_O)] = None,
    device: Annotated[str | None, _opt("device", panel=_F)] = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
    recipe: RecipeOpt = None,
) -> None:
    """Features of labelled images out (.npz, CSV, TensorBoard projector); map, neighbours."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.embed.run import run_embed  # lazy: keeps `tempo --help` free of torch

    run_command(EmbedSettings, values, run_embed)
