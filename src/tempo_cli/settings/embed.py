"""Settings of `tempo embed`: features of labelled images out (.npz, CSV, TensorBoard
projector), and a 2-D map, nearest neighbours and separation numbers of them.

The options that name what is embedded and how its features are made (`--path`, `--data`,
`--backbone`, `--image-size`, `--bn-stats`, and the split options of a class-folder tree or
a manifest) are `tempo eval`'s own fields, so that the features are those of `tempo eval`
and come from its feature cache.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tempo_cli.settings.base import (
    Backbone,
    Device,
    RecordedImageSize,
    device_field,
    recipe_field,
)
from tempo_cli.settings.data import SplitSettings
from tempo_cli.settings.evaluate import (
    IMAGE_SIZE,
    EvalSettings,
    ImageSize,
    _canonical_bn_batch_size,
    _checkpoint_list,
    parse_bn_batch_size,
)

_EVAL = EvalSettings.model_fields
#: The BatchNorm batches (train, test) of `--bn-stats batch|adapt` under `auto`: eval knn's.
BN_BATCHES_AUTO = (24, 10)
#: TensorBoard's projector shows sprites of at most this many pixels a side.
SPRITE_MAX_SIDE = 8192


class EmbedSettings(RecordedImageSize, SplitSettings):
    """`tempo embed --path CKPT [--path ...] --data DATA [--split test]`."""

    command: ClassVar[str] = "embed"
    fallback_image_size: ClassVar[int] = IMAGE_SIZE

    path: Annotated[list[str], NoDecode] = copy.copy(_EVAL["path"])
    data: str = copy.copy(_EVAL["data"])
    split: str = Field(
        "test",
        description="The split embedded, mapped and scored; neighbours come from train/ (from "
        "the split itself, leaving the image out, when the data has no train/).",
    )
    recipe: str | None = recipe_field()
    backbone: Backbone = copy.copy(_EVAL["backbone"])
    image_size: ImageSize = copy.copy(_EVAL["image_size"])
    seed: int = Field(
        0, description="Seed of random init, the map's subsample and the grid's query images."
    )
    device: Device = device_field()
    bn_stats: Literal["running", "batch", "adapt"] = copy.copy(_EVAL["bn_stats"])
    bn_batch_size: str = Field(
        "auto",
        description="BatchNorm batches TRAIN,TEST of --bn-stats batch|adapt; auto = "
        f"{BN_BATCHES_AUTO[0]},{BN_BATCHES_AUTO[1]} (as eval knn).",
    )
    map: bool = Field(
        False, description="Draw a 2-D t-SNE map of the split, one panel per --path (map.png)."
    )
    neighbours: bool = Field(
        False,
        description="Draw each --path's --k nearest train images of one seeded test image per "
        "class (neighbours.png): green border same class, red another, yellow mark same group.",
    )
    projector: bool = Field(
        False,
        description="Also write a TensorBoard embedding-projector run (features, metadata, "
        "image sprite): runs/<name>/projector, shown by `tensorboard --logdir runs`.",
    )
    k: int = Field(5, ge=1, le=50, description="Nearest train neighbours per image.")
    queries: int = Field(
        12, ge=1, le=48, description="Classes in the neighbour grid (one query image each)."
    )
    map_points: int = Field(
        1000,
        ge=10,
        le=5000,
        description="Most points a map shows; more images: a seeded subsample (the figure "
        "says so). t-SNE's time grows with its square.",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> list[str]:
        return _checkpoint_list(value)

    @field_validator("bn_batch_size", mode="before")
    @classmethod
    def _bn_batch_size(cls, value: Any) -> str:
        return _canonical_bn_batch_size(value)

    def bn_batches(self) -> tuple[int, int]:
        """`--bn-batch-size` as (train, test), `auto` resolved."""
        return parse_bn_batch_size(self.bn_batch_size) or BN_BATCHES_AUTO
