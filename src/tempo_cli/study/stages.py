"""The stages of `tempo study`: each one is an existing command, run through its core function.

A `Stage` knows its command's settings class, how the study fills those settings for one
arm (and pre-training repeat), and which core function runs them; no stage holds a second
implementation of any protocol. `STAGES` lists them in the order they run for each arm:
the internal `pretrain` (pre-training arms) and `classifier` (the linear probe the
explanation stages explain), then the selectable stages of `spec.STAGE_NAMES`.

Settings are built through `settings.base.load_settings`, so a bad value is a UsageError
(exit 2); `settings_for` renames its option to the study file's key (e.g. `[linear] lr`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.settings.base import CommandSettings, load_settings
from tempo_cli.settings.evaluate import (
    EvalKnnSettings,
    EvalLinearSettings,
    EvalSemisupSettings,
)
from tempo_cli.settings.explain import (
    ExplainAdversarialSettings,
    ExplainLrpSettings,
    ExplainRelevanceSettings,
)
from tempo_cli.settings.pretrain import PretrainSettings
from tempo_cli.settings.segment import SegmentSettings

if TYPE_CHECKING:
    from tempo_cli.study.spec import Arm, Study

#: Top-level study keys the study sets on every stage (a bad value names the top key).
_TOP_KEYS = ("data", "backbone", "image_size", "seed", "device")


@dataclass(frozen=True)
class StageInputs:
    """Where one stage of one arm runs and what it reads.

    name: the run name, `<study>/<arm folder>[/seed-<k>]/<stage>` (RunDir puts it at
        runs_dir()/name); folder: that folder; path: the backbone (`random`, `imagenet`,
        a checkpoint file, a pre-training's model.pt) or, for the explanation stages, the
        arm's classifier.pt; quiet/debug: the study's flags.
    """

    name: str
    folder: Path
    path: str
    quiet: bool = False
    debug: bool = False


class Stage(ABC):
    """One step of the study for one arm: an existing command with study-filled settings."""

    name: str = ""
    settings_cls: type[CommandSettings] = CommandSettings
    #: Fields the stage always sets (e.g. noise: attack = noise).
    fixed: dict[str, Any] = {}

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        """The settings values of this stage (before validation)."""
        common = {
            "name": inputs.name,
            "quiet": inputs.quiet,
            "debug": inputs.debug,
            "data": study.labelled,
            "backbone": study.backbone,
            "image_size": study.image_size,
            "seed": study.seed,
            "device": study.device,
            "path": inputs.path,
        }
        fields = self.settings_cls.model_fields
        values = {k: v for k, v in common.items() if k in fields}
        return {**values, **study.stage_options.get(self.name, {}), **self.fixed}

    def settings_for(
        self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs
    ) -> CommandSettings:
        """The validated settings; a bad value is a UsageError naming the study's key."""
        values = self.values(study, arm, repeat, inputs)
        try:
            return load_settings(self.settings_cls, values)
        except UsageError as e:
            field = e.option.removeprefix("--").replace("-", "_")
            key = field if field in _TOP_KEYS else f"[{self.table(arm)}] {field}"
            allowed = f"{e.allowed}; {self.name} stage of arm {arm.name!r}"
            raise UsageError(key, e.value, allowed) from None

    def table(self, arm: Arm) -> str:
        """The study file's table that holds this stage's options."""
        return self.name

    def input_file(self, settings: CommandSettings) -> Path | None:
        """The file this stage reads (hashed into its fingerprint), None for named baselines."""
        path = getattr(settings, "path", None)
        if isinstance(path, list):
            path = path[0] if path else None
        return _file(path)

    def skip_reason(self, settings: CommandSettings) -> str | None:
        """Why this stage cannot run on this data (recorded as done, not run), else None."""
        return None

    def check(self, settings: CommandSettings) -> None:
        """Inputs that must exist before the study starts (raises TempoError/UsageError);
        most stages need nothing beyond their settings."""
        return None

    @abstractmethod
    def run(self, settings: CommandSettings) -> dict[str, Any]:
        """Run the command's core function; returns its metrics."""


def _file(path: str | None) -> Path | None:
    from tempo_cli import places

    if path is None or places.is_named_baseline(path):
        return None
    return places.resolve_checkpoint(path)


class PretrainStage(Stage):
    name = "pretrain"
    settings_cls = PretrainSettings

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        # Pre-training repeats are seeds 0..N-1; the study's data, not its labelled set.
        top = {k: getattr(study, k) for k in ("data", "backbone", "image_size", "device")}
        run = {"name": inputs.name, "quiet": inputs.quiet, "debug": inputs.debug}
        return {**arm.pretrain, **top, **run, "seed": repeat or 0}

    def table(self, arm: Arm) -> str:
        return f"arms.{arm.name}.pretrain"

    def input_file(self, settings: CommandSettings) -> Path | None:
        return _file(settings.init)  # type: ignore[attr-defined]

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.pretrain.loop import run

        return run(settings)  # type: ignore[arg-type]


class EvalStage(Stage):
    """linear, semisup, knn (and the classifier): `tempo eval <protocol>`."""

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        return {**super().values(study, arm, repeat, inputs), "path": [inputs.path]}

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.evaluate.run import run_eval

        return run_eval(settings)  # type: ignore[arg-type]


class LinearStage(EvalStage):
    name = "linear"
    settings_cls = EvalLinearSettings


class ClassifierStage(EvalStage):
    """The arm's linear probe at `classifier_samples_pc`, saved as classifier.pt."""

    name = "classifier"
    settings_cls = EvalLinearSettings

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        values = super().values(study, arm, repeat, inputs)
        values["samples_pc"] = study.classifier_samples_pc
        values["save_model"] = str(inputs.folder / CLASSIFIER_FILE)
        return values


#: The file the classifier stage writes into its folder (the explanation stages' --path).
CLASSIFIER_FILE = "classifier.pt"


class SemisupStage(EvalStage):
    name = "semisup"
    settings_cls = EvalSemisupSettings


class KnnStage(EvalStage):
    name = "knn"
    settings_cls = EvalKnnSettings


class LrpStage(Stage):
    name = "lrp"
    settings_cls = ExplainLrpSettings

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.explain.lrp import run

        return run(settings)  # type: ignore[arg-type]


class NoiseStage(Stage):
    name = "noise"
    settings_cls = ExplainAdversarialSettings
    fixed = {"attack": "noise"}

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.explain.adversarial import run

        return run(settings)  # type: ignore[arg-type]


class RelevanceStage(Stage):
    name = "relevance"
    settings_cls = ExplainRelevanceSettings

    def skip_reason(self, settings: CommandSettings) -> str | None:
        """No hand masks for the labelled data: the stage is recorded done, not run."""
        from tempo_cli.data.datasets import resolve_dataset
        from tempo_cli.explain.relevance import find_masks, resolve_masks_dir

        masks = settings.masks  # type: ignore[attr-defined]
        try:
            folder, plain = resolve_masks_dir(masks, resolve_dataset(settings.data))  # type: ignore[attr-defined]
        except TempoError as e:
            return f"no hand masks for {settings.data}: {e}"  # type: ignore[attr-defined]
        if not find_masks(folder, plain=plain):
            return f"no hand masks in {folder}"
        return None

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.explain.relevance import run

        return run(settings)  # type: ignore[arg-type]


class SegmentStage(Stage):
    """`tempo segment` on COCO instances: the `[segment]` table's `data`, else the labelled
    data (whose mask sibling `resolve_segment_data` finds: demo -> demo_mask, ASL-big ->
    ASL_mask), at the table's `image_size`, else detectron2's sizes (the reference's)."""

    name = "segment"
    settings_cls = SegmentSettings

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        values = super().values(study, arm, repeat, inputs)
        if "image_size" not in study.stage_options.get(self.name, {}):
            values.pop("image_size", None)  # the classification size is no Mask R-CNN size
        return {**values, "path": [inputs.path]}

    def check(self, settings: CommandSettings) -> None:
        from tempo_cli.segment.core import resolve_segment_data

        resolve_segment_data(settings.data)  # type: ignore[attr-defined]

    def run(self, settings: CommandSettings) -> dict[str, Any]:
        from tempo_cli.segment.core import run

        return run(settings)  # type: ignore[arg-type]


#: Every stage, in the order they run for an arm (the internal ones first).
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        PretrainStage(),
        ClassifierStage(),
        LinearStage(),
        SemisupStage(),
        KnnStage(),
        RelevanceStage(),
        LrpStage(),
        NoiseStage(),
        SegmentStage(),
    )
}
