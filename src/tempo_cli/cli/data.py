"""`tempo data split`, and the split options every command reading labelled images takes.

No torch here: the core is imported inside the command so `tempo --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tempo_cli.cli.common import ConfigOpt, DebugOpt, NameOpt, QuietOpt, run_command
from tempo_cli.cli.options import argument, option
from tempo_cli.settings.data import DataCheckSettings, DataSplitSettings, SplitSettings

_S = "Split (tree or manifest without one)"

SplitFractionsOpt = Annotated[
    str | None,
    option(SplitSettings, "split_fractions", "--split-fractions", panel=_S, metavar="TR,VAL,TE"),
]
SplitSeedOpt = Annotated[int | None, option(SplitSettings, "split_seed", "--split-seed", panel=_S)]
GroupByOpt = Annotated[
    str | None, option(SplitSettings, "group_by", "--group-by", panel=_S, metavar="REGEX")
]

data_app = typer.Typer(
    name="data",
    help="Labelled data: write its split, check it for near-copies.",
    no_args_is_help=True,
)


@data_app.command("split")
def split(
    root: Annotated[str | None, argument(DataSplitSettings, "root")] = None,
    out: Annotated[str | None, option(DataSplitSettings, "out")] = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the split of labelled data as a manifest (path,label,split[,group]) to keep."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.data.split_file import run_data_split  # lazy: no torch for --help

    run_command(DataSplitSettings, values, run_data_split)


@data_app.command("check")
def check(
    data: Annotated[str | None, argument(DataCheckSettings, "data")] = None,
    frames: Annotated[str | None, option(DataCheckSettings, "frames")] = None,
    image_size: Annotated[int | None, option(DataCheckSettings, "image_size")] = None,
    split_fractions: SplitFractionsOpt = None,
    split_seed: SplitSeedOpt = None,
    group_by: GroupByOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = None,
    debug: DebugOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Split summary and near-copies: val/test against train, test against --frames."""
    values: dict[str, Any] = dict(locals())

    from tempo_cli.data.check import run_data_check  # lazy: no torch for --help

    run_command(DataCheckSettings, values, run_data_check)
