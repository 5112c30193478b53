"""Settings of `tempo study`: which study file to run, and how (the study itself is the file).

The study file (`--config STUDY.toml`, or a packaged `--preset`) is not a settings layer
like other commands' `--config`: it names arms and stages (`tempo_cli.study.spec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tempo_cli.settings.base import CommandSettings, Device
from tempo_cli.study.stages import STAGES

#: `--force` takes every stage, the internal ones (pretrain, classifier) too.
FORCEABLE = tuple(STAGES)


class StudySettings(CommandSettings):
    """`tempo study`."""

    command: ClassVar[str] = "study"

    name: str | None = Field(
        None,
        description="Study folder runs/<name>/ (absent: the study's own name: the preset's, "
        "the file's `name` or its stem). Rerunning with the same name continues the study.",
    )
    preset: str | None = Field(
        None, description="A packaged study: demo, reference-r34 or reference-r50."
    )
    config: Path | None = Field(
        None, description="A study file (TOML: arms, stages, data; see --show-preset demo)."
    )
    show_preset: str | None = Field(
        None, description="Print the study file of a preset (to copy and edit) and exit."
    )
    force: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Redo this stage for every arm even when it is done (repeatable): "
        + ", ".join(FORCEABLE)
        + ".",
    )
    device: Device | None = Field(
        None, description="cpu, cuda, mps or auto for every stage (absent: the study file's)."
    )

    @field_validator("force", mode="before")
    @classmethod
    def _force(cls, value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else list(value or [])
        tokens = [t.strip() for item in items for t in str(item).split(",") if t.strip()]
        bad = [t for t in tokens if t not in FORCEABLE]
        if bad:
            raise ValueError("stages: " + ", ".join(FORCEABLE))
        return tokens

    def forced(self) -> frozenset[Literal["pretrain"] | str]:
        return frozenset(self.force)
