"""The study file: what `tempo study` compares, on which data, through which stages.

A study file (TOML; a preset is one shipped in `study/presets/`) holds top-level keys
(`name`, `data`, `labelled`, `backbone`, `image_size`, `seed`, `device`, `stages`,
`baseline`, `classifier_samples_pc`, `ddp` (spare torchrun ranks join the pre-trainings:
study.farm), and the split of `labelled` where it has none:
`split_fractions`, `split_seed`, `group_by`, set once for every stage: docs/data.md), a
`[pretrain]` table shared by every pre-training arm, one `[arms.NAME]` table per arm,
and one table per stage (`[linear]`, `[knn]`, ...) of options of that stage's command
(the stages and their tables: `stages.STAGES`).
`load_study` checks every key and the top-level values; `runner.plan_study` builds every
stage's settings, the one check of the stages' values. Both run before anything is
written: a bad key or value is a UsageError (exit 2) naming the key, an unreadable
checkpoint a TempoError (exit 1).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tempo_cli.errors import UsageError
from tempo_cli.study.arms import SOURCES as SOURCES  # re-exported
from tempo_cli.study.arms import Arm, parse_arms, pick_baseline
from tempo_cli.study.checks import need, settings_from
from tempo_cli.study.presets import preset_names as preset_names  # re-exported
from tempo_cli.study.presets import preset_text
from tempo_cli.study.stages import STAGES, selectable
from tempo_cli.study.toml_text import toml_key as _toml_key
from tempo_cli.study.toml_text import toml_value as _toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Top-level keys besides the stages' tables (`[linear]`, ..., `[pretrain]` the arms').
_STUDY_KEYS = (
    "name", "description", "data", "labelled", "backbone", "image_size", "seed", "device",
    "stages", "baseline", "classifier_samples_pc", "arms",
    "split_fractions", "split_seed", "group_by", "ddp",
)  # fmt: skip


def _top_keys() -> tuple[str, ...]:
    return tuple(dict.fromkeys((*_STUDY_KEYS, *STAGES)))


@dataclass(frozen=True)
class Study:
    """A validated study file (see the module docstring)."""

    name: str
    origin: str
    data: str
    labelled: str
    backbone: str
    image_size: int
    seed: int
    device: str
    stages: tuple[str, ...]
    arms: tuple[Arm, ...]
    baseline: str
    classifier_samples_pc: str
    stage_options: dict[str, dict[str, Any]]
    description: str = ""
    #: split_fractions, split_seed, group_by: how `labelled` is split (every stage's).
    split: dict[str, Any] = field(default_factory=dict)
    #: Under torchrun, ranks beyond the pre-trainings join them by DDP (study.farm); one
    #: process: no effect.
    ddp: bool = False

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: `study.json["study"]` and the source of `to_toml`."""
        return {
            "name": self.name,
            "origin": self.origin,
            "description": self.description,
            "data": self.data,
            "labelled": self.labelled,
            "backbone": self.backbone,
            "image_size": self.image_size,
            "seed": self.seed,
            "device": self.device,
            "stages": list(self.stages),
            "baseline": self.baseline,
            "classifier_samples_pc": self.classifier_samples_pc,
            "ddp": self.ddp,
            **{k: v for k, v in self.split.items() if v is not None},
            "arms": [a.to_dict() for a in self.arms],
            "stage_options": {k: dict(v) for k, v in self.stage_options.items()},
        }

    def to_toml(self) -> str:
        """The resolved study as a study file (`runs/<name>/study.toml`): rerunnable as is."""
        d = self.to_dict()
        lines = [f"# resolved from {_toml_value(d.pop('origin'))}"]
        arms, options = d.pop("arms"), d.pop("stage_options")
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        for stage, values in options.items():
            lines += ["", f"[{stage}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
        for arm in arms:
            key = _toml_key(arm["name"])
            lines += ["", f"[arms.{key}]", f"source = {_toml_value(arm['source'])}"]
            if "checkpoint" in arm:
                lines.append(f"checkpoint = {_toml_value(arm['checkpoint'])}")
            if arm["source"] == "pretrain":
                lines += [f"repeats = {arm['repeats']}", "", f"[arms.{key}.pretrain]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in arm["pretrain"].items()]
        return "\n".join(lines) + "\n"


# --- loading ---------------------------------------------------------------------------


def load_study(
    preset: str | None = None,
    config: Path | None = None,
    name: str | None = None,
    device: str | None = None,
) -> Study:
    """The study of `--preset` or `--config FILE`, validated (nothing is written)."""
    if (preset is None) == (config is None):
        raise UsageError("--preset/--config", preset or config, "give exactly one of them")
    if preset is not None:
        text, origin, default_name = preset_text(preset), f"preset {preset}", preset
    else:
        path = Path(str(config)).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError("--config", str(config), f"not a readable study file: {e}") from None
        origin, default_name = str(path), path.stem
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError("--config", origin, f"not valid TOML: {e}") from None
    return parse_study(data, origin, name or data.get("name") or default_name, device)


def parse_study(data: dict[str, Any], origin: str, name: Any, device: str | None) -> Study:
    """A Study from a parsed study file (see `load_study`)."""
    keys = _top_keys()
    unknown = [k for k in data if k not in keys]
    first = unknown[0] if unknown else ""
    need(not unknown, first, data.get(first), "not a study key; allowed: " + ", ".join(keys))
    name = str(name)
    need(bool(_SAFE_NAME.match(name)), "name", name, "letters, digits, . _ - (a folder name)")
    top = _top_values(data, device)
    arms = parse_arms(data)
    baseline = pick_baseline(data.get("baseline"), arms)
    study = Study(
        name=name,
        origin=origin,
        description=str(data.get("description", "")),
        arms=arms,
        baseline=baseline,
        stages=_stages(data.get("stages", ["linear"])),
        stage_options={},
        **top,
    )
    return replace(study, stage_options=_stage_options(data, study))


#: A study's side in pixels unless it says (the reference's; `auto` needs a checkpoint).
DEFAULT_IMAGE_SIZE = 128


def _top_values(data: dict[str, Any], device: str | None) -> dict[str, Any]:
    """data, labelled, backbone, image_size, seed, device, classifier_samples_pc, ddp and the
    split options: validated as the commands validate them."""
    from tempo_cli.settings.data import SplitSettings
    from tempo_cli.settings.evaluate import EvalLinearSettings
    from tempo_cli.settings.pretrain import PretrainSettings

    fields = PretrainSettings.model_fields
    values = {k: data.get(k, fields[k].default) for k in ("data", "backbone", "seed", "device")}
    values["data"] = str(values["data"])
    values["device"] = device or values["device"]
    values["image_size"] = data.get("image_size", DEFAULT_IMAGE_SIZE)
    checked = settings_from(PretrainSettings, {**values, "init": "random"}, "")
    need(checked.image_size != "auto", "image_size", "auto", "a side in pixels")
    samples = data.get(
        "classifier_samples_pc", EvalLinearSettings.model_fields["samples_pc"].default
    )
    probe = settings_from(EvalLinearSettings, {"path": ["random"], "samples_pc": samples}, "")
    need(len(probe.samples_pc_list()) == 1, "classifier_samples_pc", samples, "one value")
    split_keys = ("split_fractions", "split_seed", "group_by")
    given = {k: data[k] for k in split_keys if k in data}
    split = settings_from(SplitSettings, given, "")
    ddp = data.get("ddp", False)
    need(isinstance(ddp, bool), "ddp", ddp, "true or false")
    return {
        "ddp": ddp,
        "split": {k: getattr(split, k) for k in split_keys},
        "data": values["data"],
        "labelled": str(data.get("labelled", values["data"])),
        "backbone": checked.backbone,
        "image_size": int(checked.image_size),
        "seed": checked.seed,
        "device": checked.device,
        "classifier_samples_pc": probe.samples_pc,
    }


def _stages(value: Any) -> tuple[str, ...]:
    names = selectable()
    items = [value] if isinstance(value, str) else value
    allowed = "a list of: " + ", ".join(names)
    need(isinstance(items, list) and bool(items), "stages", value, allowed)
    bad = [s for s in items if s not in names]
    need(not bad, "stages", bad[0] if bad else "", allowed)
    return tuple(s for s in names if s in items)


def _stage_options(data: dict[str, Any], study: Study) -> dict[str, dict[str, Any]]:
    """The tables of the stages some arm of `study` runs, keys checked (every table is
    checked, run or not); their values are checked when the study is planned."""
    tables = {name: stage.options(data) for name, stage in STAGES.items()}
    return {
        name: options
        for name, options in tables.items()
        if options is not None and any(STAGES[name].wanted(study, arm) for arm in study.arms)
    }
