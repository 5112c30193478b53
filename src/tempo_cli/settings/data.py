"""The split options of every command that reads labelled images, and `tempo data split`.

`SplitSettings` holds `--split-fractions`, `--split-seed` and `--group-by` once; `eval *`,
`explain *` and `data split` inherit it. They matter only where the data gives no split
(a class-folder tree, a manifest without a split column: `data/labelled_data.py`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tempo_cli.settings.base import CommandSettings

_DEFAULT_FRACTIONS = "0.6,0.2,0.2"


class SplitSettings(CommandSettings):
    """How a split is made where the labelled data has none."""

    split_fractions: Annotated[str, NoDecode] = Field(
        _DEFAULT_FRACTIONS,
        description="TRAIN,VAL,TEST fractions of the split tempo makes for a class-folder tree "
        "or a manifest without a split column, per class: val and test get round(fraction x "
        "n) images (halves up), at least 1 each, train the rest (at least 1); 0 val makes none.",
    )
    split_seed: int = Field(0, description="Seed of the split tempo makes (same seed, same split).")
    group_by: str | None = Field(
        None,
        description="REGEX on file names whose first capture group names an image's group "
        "(video, session, person), e.g. '^(.+?)_'; a group never straddles two splits "
        "(absent: a class folder's sub-folders, or the manifest's group column).",
    )

    @field_validator("split_fractions", mode="before")
    @classmethod
    def _fractions(cls, value: Any) -> str:
        from tempo_cli.data.splits import fractions_text, parse_fractions

        return fractions_text(parse_fractions(value))

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: str | None) -> str | None:
        from tempo_cli.data.splits import check_group_regex

        return None if value is None else check_group_regex(value)

    def split_options(self):  # -> data.splits.SplitOptions (no import of data/ at class time)
        """The `SplitOptions` these settings give."""
        from tempo_cli.data.splits import SplitOptions, parse_fractions

        return SplitOptions(parse_fractions(self.split_fractions), self.split_seed, self.group_by)


class DataSplitSettings(SplitSettings):
    """`tempo data split ROOT --out FILE`: the split as a manifest to keep, edit and share."""

    command: ClassVar[str] = "data-split"

    root: str = Field(
        description="Labelled data: a class-folder tree, a split-folder root or a manifest .csv."
    )
    out: str = Field(
        "splits.csv",
        description="Manifest to write (path,label,split[,group]; paths relative to it).",
    )


class DataCheckSettings(SplitSettings):
    """`tempo data check DATA [--frames VIDEO_DATA]`: the split, its groups and near-copies."""

    command: ClassVar[str] = "data-check"

    data: str = Field(
        description="Labelled data: a dataset name or root, a class-folder tree or a manifest .csv."
    )
    frames: str | None = Field(
        None,
        description="Pre-training data (a video file, a folder of videos or frames, a root "
        "with frames/) whose frames the test images are checked against (absent: no check).",
    )
    image_size: int = Field(
        64,
        ge=16,
        le=4096,
        description="Side the frames are decoded at for the check (the frame cache's size: "
        "the pre-training's --image-size reuses its cache).",
    )
