"""Settings of `tempo explain lrp | adversarial | relevance` (CLI.md, SPEC.md "Explanations")."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from tempo_cli.settings.base import CommandSettings

METHODS = ("lrp", "integrated-gradients", "saliency")
ATTACKS = ("noise", "fgsm", "pgd")

# The study's noise levels; L-inf budgets of an order that moves a classifier for the
# gradient attacks (0, 1/255, 2/255, 4/255, 8/255, 16/255 rounded).
NOISE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
ATTACK_LEVELS: tuple[float, ...] = (0.0, 0.004, 0.008, 0.016, 0.031, 0.063)


class ExplainSettings(CommandSettings):
    """Options every explain command shares."""

    command: ClassVar[str] = "explain"

    path: str
    compare: str | None = None
    data: str = "asl"
    split: str = "test"
    out: str | None = None
    method: Literal["lrp", "integrated-gradients", "saliency"] = "lrp"
    image_size: int = 128
    batch_size: int = 16
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    seed: int = 0

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if not 16 <= v <= 4096:
            raise ValueError("an image side in pixels between 16 and 4096")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int) -> int:
        if v < 1:
            raise ValueError("a positive number of images per batch")
        return v


class ExplainLrpSettings(ExplainSettings):
    """`tempo explain lrp`: a heatmap PNG per image and model, contact sheets per class."""

    command: ClassVar[str] = "explain-lrp"

    sheets: bool = True


class ExplainAdversarialSettings(ExplainSettings):
    """`tempo explain adversarial`: accuracy and heatmaps under noise or gradient attacks.

    `levels` is a comma-separated list of noise levels (attack `noise`) or L-inf budgets
    in [0, 1] pixel space (`fgsm`, `pgd`); empty = the default of the attack.
    """

    command: ClassVar[str] = "explain-adversarial"

    levels: str | None = None
    attack: Literal["noise", "fgsm", "pgd"] = "noise"
    steps: int = 10
    figures: int | None = None

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        if v is None:
            return None
        items = v if isinstance(v, list | tuple) else str(v).replace(" ", "").split(",")
        try:
            values = [float(x) for x in items if str(x) != ""]
        except ValueError:
            raise ValueError("comma-separated numbers in [0, 1], e.g. 0,0.1,0.2") from None
        if not values or any(not math.isfinite(x) or not 0.0 <= x <= 1.0 for x in values):
            raise ValueError("comma-separated numbers in [0, 1], e.g. 0,0.1,0.2")
        return ",".join(f"{x:g}" for x in values)

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
        """The levels as floats, or the default for the attack."""
        if self.levels is None:
            return list(NOISE_LEVELS if self.attack == "noise" else ATTACK_LEVELS)
        return [float(x) for x in self.levels.split(",")]


class ExplainRelevanceSettings(ExplainSettings):
    """`tempo explain relevance`: relative relevance inside the hand mask.

    `masks` absent: `<data>/masks` if it exists, else the data root itself.
    """

    command: ClassVar[str] = "explain-relevance"

    masks: str | None = None
