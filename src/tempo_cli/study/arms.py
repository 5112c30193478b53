"""The arms of a study: each a backbone source (a pre-training, a checkpoint, imagenet or
random), parsed and checked from the study file's `[arms.NAME]` tables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tempo_cli.errors import TempoError
from tempo_cli.study.checks import checked_options, need, table_of

#: Where an arm's backbone comes from.
SOURCES = ("pretrain", "imagenet", "random", "checkpoint")
_ARM_KEYS = ("source", "checkpoint", "repeats", "pretrain")


@dataclass(frozen=True)
class Arm:
    """One backbone source of the comparison."""

    name: str
    folder: str
    source: str
    checkpoint: str | None = None
    pretrain: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1

    @property
    def is_pretrain(self) -> bool:
        return self.source == "pretrain"

    @property
    def path(self) -> str | None:
        """The `--path` of a non-pretraining arm: the file, `random` or `imagenet`."""
        return (
            self.checkpoint
            if self.source == "checkpoint"
            else (None if self.is_pretrain else self.source)
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "folder": self.folder, "source": self.source}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        if self.is_pretrain:
            out["repeats"] = self.repeats
            out["pretrain"] = dict(self.pretrain)
        return out


def parse_arms(data: dict[str, Any]) -> tuple[Arm, ...]:
    """The `[arms.NAME]` tables, in file order."""
    from tempo_cli.settings.pretrain import PretrainSettings

    shared = checked_options(table_of(data, "pretrain"), PretrainSettings, "pretrain")
    table = table_of(data, "arms")
    need(bool(table), "arms", "", "at least one [arms.NAME] table")
    arms: list[Arm] = []
    folders: set[str] = set()
    for i, (name, spec) in enumerate(table.items()):
        need(isinstance(spec, dict), f"arms.{name}", spec, "a table")
        arm = _arm(str(name), spec, shared)
        folder = _folder(arm.name, i, folders)
        folders.add(folder)
        arms.append(Arm(**{**arm.__dict__, "folder": folder}))
    return tuple(arms)


def _folder(name: str, index: int, taken: set[str]) -> str:
    """A folder name for arm `name`: its safe characters, unique in the study."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or f"arm-{index + 1}"
    folder, n = slug, 2
    while folder in taken or folder in ("figures",):
        folder, n = f"{slug}-{n}", n + 1
    return folder


def _arm(name: str, spec: dict[str, Any], shared: dict[str, Any]) -> Arm:
    from tempo_cli.settings.pretrain import PretrainSettings

    where = f"arms.{name}"
    unknown = [k for k in spec if k not in _ARM_KEYS]
    first = unknown[0] if unknown else ""
    need(not unknown, f"{where}.{first}", spec.get(first), "allowed: " + ", ".join(_ARM_KEYS))
    source = spec.get("source")
    if source is None:
        source = (
            "checkpoint" if "checkpoint" in spec else "pretrain" if "pretrain" in spec else None
        )
    need(
        source in SOURCES,
        f"{where}.source",
        source,
        "pretrain (with a [" + where + ".pretrain] table), imagenet, random, or checkpoint = FILE",
    )
    repeats = spec.get("repeats", 1)
    need(isinstance(repeats, int) and repeats >= 1, f"{where}.repeats", repeats, "an integer >= 1")
    need(
        repeats == 1 or source == "pretrain", f"{where}.repeats", repeats, "pre-training arms only"
    )
    if source == "checkpoint":
        return Arm(name, "", source, checkpoint=_readable_checkpoint(where, spec.get("checkpoint")))
    if source != "pretrain":
        return Arm(name, "", source)
    own = checked_options(table_of(spec, "pretrain"), PretrainSettings, f"{where}.pretrain")
    # Keys checked here, values when the study is planned (stages.PretrainStage).
    return Arm(name, "", source, pretrain={**shared, **own}, repeats=repeats)


def _readable_checkpoint(where: str, value: Any) -> str:
    """The checkpoint file of an arm, read once now so a bad file fails before any work."""
    from tempo_cli import places
    from tempo_cli.models.checkpoint import load_model

    need(isinstance(value, str) and bool(value), f"{where}.checkpoint", value, "a file")
    path = places.resolve_checkpoint(value)
    if not (path.is_file() or path.is_dir()):  # a file, or a model folder (tempo export)
        raise TempoError(f"{where}: checkpoint {value} not found; give an existing file")
    load_model(path)  # TempoError naming the file when it is truncated or foreign
    return str(path.resolve())


def pick_baseline(value: Any, arms: tuple[Arm, ...]) -> str:
    """`baseline`, else the first arm that is not a pre-training (else the first arm)."""
    names = [a.name for a in arms]
    if value is None:
        fixed = [a.name for a in arms if not a.is_pretrain]
        return fixed[0] if fixed else arms[0].name
    need(value in names, "baseline", value, "an arm: " + ", ".join(names))
    return str(value)
