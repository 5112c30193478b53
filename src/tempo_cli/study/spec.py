"""The study file: what `tempo study` compares, on which data, through which stages.

A study file (TOML; a preset is one shipped in `study/presets/`) holds top-level keys
(`name`, `data`, `labelled`, `backbone`, `image_size`, `seed`, `device`, `stages`,
`baseline`, `classifier_samples_pc`), a `[pretrain]` table shared by every pre-training
arm, one `[arms.NAME]` table per arm, and one table per stage (`[linear]`, `[knn]`, ...)
of options of that stage's command. `load_study` validates all of it before anything is
written: a bad key or value is a UsageError (exit 2) naming the key, an unreadable
checkpoint a TempoError (exit 1).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempo_cli.errors import UsageError
from tempo_cli.settings.base import CommandSettings
from tempo_cli.study.arms import SOURCES as SOURCES  # re-exported
from tempo_cli.study.arms import Arm, parse_arms, pick_baseline
from tempo_cli.study.checks import checked_options, need, settings_from, table_of
from tempo_cli.study.presets import preset_names as preset_names  # re-exported
from tempo_cli.study.presets import preset_text
from tempo_cli.study.toml_text import toml_key as _toml_key
from tempo_cli.study.toml_text import toml_value as _toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The stages a study file may select, in the order they run for each arm.
STAGE_NAMES = ("linear", "semisup", "knn", "relevance", "lrp", "noise", "segment")
#: Stages that explain the arm's linear-probe classifier (the internal `classifier` stage).
EXPLAIN_STAGES = ("relevance", "lrp", "noise")
#: Samples per class of the `linear`, `semisup` and `knn` sweeps unless a stage table says.
DEFAULT_SAMPLES_PC = "1,5,10,15,20,full"
#: Study-set fields a stage table may set for itself: segmentation reads COCO instances
#: (default: the labelled data's mask sibling) at its own image size (default: detectron2's).
OWN_FIELDS = {"segment": frozenset({"data", "image_size"})}
_TOP_KEYS = (
    "name", "description", "data", "labelled", "backbone", "image_size", "seed", "device",
    "stages", "baseline", "classifier_samples_pc", "pretrain", "arms", "classifier",
    *STAGE_NAMES,
)  # fmt: skip
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _stage_settings_class(stage: str) -> type[CommandSettings]:
    """The command settings each stage (and the internal ones) runs with."""
    from tempo_cli.settings import evaluate, explain, pretrain, segment

    return {
        "pretrain": pretrain.PretrainSettings,
        "classifier": evaluate.EvalLinearSettings,
        "linear": evaluate.EvalLinearSettings,
        "semisup": evaluate.EvalSemisupSettings,
        "knn": evaluate.EvalKnnSettings,
        "relevance": explain.ExplainRelevanceSettings,
        "lrp": explain.ExplainLrpSettings,
        "noise": explain.ExplainAdversarialSettings,
        "segment": segment.SegmentSettings,
    }[stage]


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

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def needs_classifier(self) -> bool:
        return any(s in EXPLAIN_STAGES for s in self.stages)

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
            "arms": [a.to_dict() for a in self.arms],
            "stage_options": {k: dict(v) for k, v in self.stage_options.items()},
        }

    def to_toml(self) -> str:
        """The resolved study as a study file (`runs/<name>/study.toml`): rerunnable as is."""
        d = self.to_dict()
        lines = [f"# resolved from {_toml_value(d.pop('origin'))}"]
        arms, options = d.pop("arms"), d.pop("stage_options")
        if "classifier" in options:  # its samples_pc is the top-level classifier_samples_pc
            options["classifier"].pop("samples_pc", None)
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
        path = Path(config).expanduser()  # type: ignore[arg-type]
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
    unknown = [k for k in data if k not in _TOP_KEYS]
    first = unknown[0] if unknown else ""
    need(not unknown, first, data.get(first), "not a study key; allowed: " + ", ".join(_TOP_KEYS))
    name = str(name)
    need(bool(_SAFE_NAME.match(name)), "name", name, "letters, digits, . _ - (a folder name)")
    top = _top_values(data, device)
    arms = parse_arms(data, top)
    baseline = pick_baseline(data.get("baseline"), arms)
    stages = _stages(data.get("stages", ["linear"]))
    options = _stageoptions(data, stages, top)
    return Study(
        name=name,
        origin=origin,
        description=str(data.get("description", "")),
        arms=arms,
        baseline=baseline,
        stages=stages,
        stage_options=options,
        **top,
    )


def _top_values(data: dict[str, Any], device: str | None) -> dict[str, Any]:
    """data, labelled, backbone, image_size, seed, device, classifier_samples_pc: validated
    as the commands validate them (the pretrain settings know every one)."""
    from tempo_cli.settings.evaluate import EvalLinearSettings
    from tempo_cli.settings.pretrain import PretrainSettings

    values = {
        "data": str(data.get("data", "asl")),
        "backbone": data.get("backbone", "resnet34"),
        "image_size": data.get("image_size", 128),
        "seed": data.get("seed", 0),
        "device": device or data.get("device", "auto"),
    }
    checked = settings_from(PretrainSettings, {**values, "init": "random"}, "")
    need(checked.image_size != "auto", "image_size", "auto", "a side in pixels")
    samples = data.get("classifier_samples_pc", "full")
    probe = settings_from(EvalLinearSettings, {"path": ["random"], "samples_pc": samples}, "")
    need(len(probe.samples_pc_list()) == 1, "classifier_samples_pc", samples, "one value")
    return {
        "data": values["data"],
        "labelled": str(data.get("labelled", values["data"])),
        "backbone": checked.backbone,
        "image_size": int(checked.image_size),
        "seed": checked.seed,
        "device": checked.device,
        "classifier_samples_pc": probe.samples_pc,
    }


def _stages(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    allowed = "a list of: " + ", ".join(STAGE_NAMES)
    need(isinstance(items, list) and bool(items), "stages", value, allowed)
    bad = [s for s in items if s not in STAGE_NAMES]
    need(not bad, "stages", bad[0] if bad else "", allowed)
    return tuple(s for s in STAGE_NAMES if s in items)


def _stageoptions(
    data: dict[str, Any], stages: tuple[str, ...], top: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The tables of the selected stages (and of the classifier the explanation stages use),
    each validated by building its settings the way the runner will."""
    from tempo_cli.settings.evaluate import EvalLinearSettings

    out: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[str, Any]] = {}
    for stage in STAGE_NAMES:  # every table is checked, selected or not
        cls = _stage_settings_class(stage)
        own_fields = OWN_FIELDS.get(stage, frozenset())
        options = checked_options(table_of(data, stage), cls, stage, own_fields)
        if stage in ("linear", "semisup", "knn"):
            options.setdefault("samples_pc", DEFAULT_SAMPLES_PC)
        if stage == "noise":
            attack = options.pop("attack", "noise")
            need(attack == "noise", "[noise] attack", attack, "noise (the study's stage)")
        _check_stage(stage, options)
        tables[stage] = options
    out = {s: tables[s] for s in stages}
    if any(s in EXPLAIN_STAGES for s in stages):
        # The linear stage's probe options, at classifier_samples_pc, one fixed subset.
        linear = {k: v for k, v in tables["linear"].items() if k not in _PER_SWEEP}
        own = checked_options(table_of(data, "classifier"), EvalLinearSettings, "classifier")
        need("samples_pc" not in own, "[classifier] samples_pc", own.get("samples_pc"),
              "set classifier_samples_pc at the top level")  # fmt: skip
        out["classifier"] = {**linear, **own, "samples_pc": top["classifier_samples_pc"]}
        _check_stage("classifier", out["classifier"])
    return out


#: Linear options that describe the sweep, not the probe the classifier stage trains.
_PER_SWEEP = ("samples_pc", "resample_labels")


def _check_stage(stage: str, options: dict[str, Any]) -> None:
    """Build the stage's settings with a stand-in backbone: bad values fail here."""
    explain = stage in EXPLAIN_STAGES
    path: Any = "random" if explain else ["random"]
    extra = {"attack": "noise"} if stage == "noise" else {}
    settings_from(_stage_settings_class(stage), {"path": path, **options, **extra}, f"[{stage}] ")
