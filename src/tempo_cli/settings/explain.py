"""Settings of `tempo explain lrp | adversarial | relevance` (CLI.md, SPEC.md "Explanations")."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from tempo_cli.settings.base import (
    AUTO,
    Device,
    RecordedImageSize,
    device_field,
    image_size_field,
)
from tempo_cli.settings.data import SplitSettings

# The study's noise levels; L-inf budgets of an order that moves a classifier for the
# gradient attacks (0, 1/255, 2/255, 4/255, 8/255, 16/255 rounded).
NOISE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
ATTACK_LEVELS: tuple[float, ...] = (0.0, 0.004, 0.008, 0.016, 0.031, 0.063)
#: `--levels auto` per attack (the attack registry in explain/attacks.py names the same keys).
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "noise": NOISE_LEVELS,
    "fgsm": ATTACK_LEVELS,
    "pgd": ATTACK_LEVELS,
}
#: `--image-size auto` for a classifier that records no input size (the reference tempo.pth).
IMAGE_SIZE = 128
ImageSize = image_size_field(16, 4096)


def _levels_text(levels: tuple[float, ...]) -> str:
    return ",".join(f"{x:g}" for x in levels)


#: `--cmap`: the heatmap colour maps of explain/colours.py `CMAPS` (a test keeps them equal).
Cmap = Literal["reference", "bwr", "coldnhot", "reds"]


def _cmap_field() -> Any:
    return Field(
        "reference",
        description="Heatmap colours: reference (the study's: zennit's signed map, zero light "
        "grey, positive red, negative blue, symmetric), bwr, coldnhot (zennit, symmetric) or "
        "reds (white at the minimum to red at the maximum).",
    )


def _images_field() -> Any:
    return Field(
        None,
        description="A flat folder of unlabelled images (no class folders) to explain instead "
        "of --data/--split: figures and heatmaps per image, no accuracy.",
    )


class ExplainSettings(RecordedImageSize, SplitSettings):
    """Options every explain command shares."""

    command: ClassVar[str] = "explain"
    fallback_image_size: ClassVar[int] = IMAGE_SIZE

    path: str = Field(
        description="Classifier checkpoint (backbone + linear head, e.g. from `tempo eval linear "
        "--save-model`, or the reference tempo.pth): a file or a name in the model directory."
    )
    compare: str | None = Field(None, description="A second classifier to compare side by side.")
    data: str = Field(
        "asl",
        description="Labelled data: a dataset name, a root with <split>/<CLASS>/, a "
        "class-folder tree or a manifest .csv (docs/data.md).",
    )
    split: str = Field("test", description="Labelled split to explain.")
    out: str | None = Field(
        None, description="Output folder (absent: the run folder runs/<name>/)."
    )
    method: Literal["lrp", "integrated-gradients", "saliency"] = Field(
        "lrp",
        description="lrp (zennit EpsilonPlusFlat), integrated-gradients or saliency (captum).",
    )
    image_size: ImageSize = Field(
        AUTO,
        description="Images resized (NEAREST) to this side; auto = the size the checkpoint "
        f"records, else {IMAGE_SIZE}.",
    )
    batch_size: int = Field(16, description="Images per batch.")
    device: Device = device_field()
    seed: int = Field(0, description="Seed.")

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int) -> int:
        if v < 1:
            raise ValueError("a positive number of images per batch")
        return v


class ExplainLrpSettings(ExplainSettings):
    """`tempo explain lrp`: a heatmap PNG per image and model, contact sheets per class."""

    command: ClassVar[str] = "explain-lrp"

    sheets: bool = Field(True, description="Contact sheet per class.")
    cmap: Cmap = _cmap_field()
    images: str | None = _images_field()


class ExplainAdversarialSettings(ExplainSettings):
    """`tempo explain adversarial`: accuracy and heatmaps under noise or gradient attacks.

    `levels` is a comma-separated list of noise levels (attack `noise`) or L-inf budgets
    in [0, 1] pixel space (`fgsm`, `pgd`); `auto` = the levels of the attack.
    """

    command: ClassVar[str] = "explain-adversarial"

    levels: str = Field(
        AUTO,
        description="Comma-separated noise levels / L-inf budgets in [0, 1]; auto = "
        f"{_levels_text(NOISE_LEVELS)} for noise, {_levels_text(ATTACK_LEVELS)} for fgsm/pgd.",
    )
    attack: Literal["noise", "fgsm", "pgd"] = Field(
        "noise", description="noise (the study), fgsm or pgd (captum.robust)."
    )
    steps: int = Field(10, description="PGD steps.")
    figures: int | None = Field(
        None, description="Per-image figures to draw: the first N images (absent: all)."
    )
    noise: Literal["gaussian", "uniform"] = Field(
        "gaussian",
        description="Noise of --attack noise, per pixel and colour channel: gaussian (the "
        "study's, estimated from its figures: std = --noise-scale x level) or uniform "
        "(in [-level, level]).",
    )
    noise_scale: float = Field(
        0.3,
        description="Gaussian noise std per unit of level, in [0, 1] pixels (0.3 is estimated "
        "from the study's figures).",
    )
    cmap: Cmap = _cmap_field()
    images: str | None = _images_field()

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip().lower() == AUTO):
            return AUTO
        items = v if isinstance(v, list | tuple) else str(v).replace(" ", "").split(",")
        try:
            values = [float(x) for x in items if str(x) != ""]
        except ValueError:
            raise ValueError("comma-separated numbers in [0, 1], e.g. 0,0.1,0.2") from None
        if not values or any(not math.isfinite(x) or not 0.0 <= x <= 1.0 for x in values):
            raise ValueError("comma-separated numbers in [0, 1], e.g. 0,0.1,0.2")
        return _levels_text(tuple(values))

    @field_validator("noise_scale")
    @classmethod
    def _noise_scale(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("a positive noise std per unit of level, e.g. 0.3")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError("a positive number of PGD steps")
        return v

    @field_validator("figures")
    @classmethod
    def _figures(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("a number of per-image figures >= 0 (absent = every image)")
        return v

    def level_values(self) -> list[float]:
        """The levels as floats (`auto`: those of the attack)."""
        if self.levels == AUTO:
            return list(DEFAULT_LEVELS[self.attack])
        return [float(x) for x in self.levels.split(",")]


class ExplainRelevanceSettings(ExplainSettings):
    """`tempo explain relevance`: relative relevance inside the hand mask.

    `masks` absent: `<data>/masks` if it exists, else the data root when it holds
    Cityscapes masks, else those `tempo download masks` installed.
    """

    command: ClassVar[str] = "explain-relevance"

    masks: str | None = Field(
        None,
        description="Folder of hand masks: <ID>_gtFine_color.png anywhere below, or <ID>.png "
        "(absent: <data>/masks, else Cityscapes masks under the data root, else those `tempo "
        "download masks` installed).",
    )
