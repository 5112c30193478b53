"""The stages of `tempo study`, each one record in `STAGES`: everything the study knows of it.

A `Stage` names its command's settings class and core function (`core`, imported when the
stage runs), what it reads (`reads`: the arm's backbone or its classifier; the stage that
`provides` it writes that file), the values it always sets (`fixed`) or sets unless its
table does (`defaults`), the study-set fields its table may set (`own_fields`) and whether
an unfinished run resumes (`resumes`). The study file's stage list, `--force`, the top
keys, the plan and the report derive from `STAGES`; its order is the run order per arm.
A stage with a quirk overrides one method (`wanted`, `values`, `options`, `skip_reason`,
`check`, `input_file`).

Settings are built through `settings.base.load_settings` when the study is planned, so a
bad value is a UsageError (exit 2) naming the study file's key (e.g. `[linear] lr`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.settings.base import CommandSettings, load_settings
from tempo_cli.settings.data import DataCheckSettings
from tempo_cli.settings.embed import EmbedSettings
from tempo_cli.settings.evaluate import (
    EvalKnnSettings,
    EvalLinearSettings,
    EvalSemisupSettings,
    parse_samples_pc,
)
from tempo_cli.settings.explain import (
    ExplainAdversarialSettings,
    ExplainLrpSettings,
    ExplainRelevanceSettings,
)
from tempo_cli.settings.pretrain import PretrainSettings
from tempo_cli.settings.segment import SegmentSettings
from tempo_cli.study.checks import checked_options, need, table_of

if TYPE_CHECKING:
    from tempo_cli.study.spec import Arm, Study

S = TypeVar("S", bound=CommandSettings)
#: What a stage reads: the arm's backbone (a named baseline, a checkpoint, a pre-training's
#: model file) or the classifier the arm's `classifier` stage trained.
Input = Literal["backbone", "classifier"]

#: What a pre-training writes into its folder: the final model, the resumable state.
MODEL_FILE = "model.pt"
LAST_FILE = "last.pt"
#: The file the classifier stage writes into its folder (the explanation stages' --path).
CLASSIFIER_FILE = "classifier.pt"
#: Samples per class of the `linear`, `semisup` and `knn` sweeps unless a stage table says.
DEFAULT_SAMPLES_PC = "1,5,10,15,20,full"
#: Top-level study keys the study sets on every stage (a bad value names the top key).
_TOP_KEYS = ("data", "backbone", "image_size", "seed", "device")


@dataclass(frozen=True)
class StageInputs:
    """Where one stage of one arm runs and what it reads.

    name: the run name, `<study>/<arm folder>[/seed-<k>]/<stage>` (RunDir puts it at
        runs_dir()/name); folder: that folder; path: the file or baseline it `reads`
        (None for a stage that reads none); quiet/debug: the study's flags.
    """

    name: str
    folder: Path
    path: str | None
    quiet: bool = False
    debug: bool = False


@dataclass(frozen=True)
class Stage(Generic[S]):
    """One step of the study for one arm: an existing command with study-filled settings."""

    name: str
    settings_cls: type[S]
    #: "module:function": the command's core function, settings -> metrics dict.
    core: str
    reads: Input | None = "backbone"
    #: (what, file): the stage writes `file` into its folder, the arm's `what` from then on.
    provides: tuple[Input, str] | None = None
    #: Internal stages run when another needs them; the others when the study selects them.
    internal: bool = False
    #: Settings the stage always sets (its table may only repeat them).
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Settings the stage sets unless its table does.
    defaults: dict[str, Any] = field(default_factory=dict)
    #: Study-set fields the stage's table may set for itself.
    own_fields: frozenset[str] = frozenset()
    #: The stage's --path is a list (the evaluation and segmentation commands compare paths).
    path_list: bool = False
    #: An unfinished run continues from its LAST_FILE (else it reruns from scratch).
    resumes: bool = False
    #: Runs for an arm's first pre-training repeat only (what it makes is the study's).
    once: bool = False

    # --- the study file ---------------------------------------------------------------

    def options(self, data: dict[str, Any]) -> dict | None:
        """The stage's table of the study file, keys checked, its defaults filled in (None:
        the stage has no table)."""
        where = self.name
        options = checked_options(table_of(data, where), self.settings_cls, where, self.own_fields)
        for key, value in self.fixed.items():
            got = options.pop(key, value)
            need(got == value, f"[{where}] {key}", got, f"{value} (the study's {where} stage)")
        return {**self.defaults, **options}

    def wanted(self, study: Study, arm: Arm) -> bool:
        """Whether this arm runs the stage."""
        return self.name in study.stages

    def made_by(self, study: Study) -> str | None:
        """The stage that makes what this one would (so this one is not planned), or None."""
        return None

    def provides_for(self, study: Study, arm: Arm) -> tuple[Input, str] | None:
        """(what, file) this stage writes for the arm's later stages (see `provides`)."""
        return self.provides

    # --- planning ---------------------------------------------------------------------

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        """The settings values of this stage (before validation)."""
        path: Any = [inputs.path] if self.path_list else inputs.path
        common = {
            "name": inputs.name,
            "quiet": inputs.quiet,
            "debug": inputs.debug,
            "data": study.labelled,
            "backbone": study.backbone,
            "image_size": study.image_size,
            "seed": study.seed,
            "device": study.device,
            "path": path,
            **study.split,
        }
        fields = self.settings_cls.model_fields
        values = {k: v for k, v in common.items() if k in fields}
        return {**values, **study.stage_options.get(self.name, {}), **self.fixed}

    def settings_for(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> S:
        """The validated settings; a bad value is a UsageError naming the study's key."""
        values = self.values(study, arm, repeat, inputs)
        try:
            return load_settings(self.settings_cls, values)
        except UsageError as e:
            key = e.option.removeprefix("--").replace("-", "_")
            key = key if key in _TOP_KEYS else f"[{self.table(arm)}] {key}"
            allowed = f"{e.allowed}; {self.name} stage of arm {arm.name!r}"
            raise UsageError(key, e.value, allowed) from None

    def table(self, arm: Arm) -> str:
        """The study file's table that holds this stage's options."""
        return self.name

    def check(self, settings: S) -> None:
        """Inputs that must exist before the study starts (raises TempoError/UsageError);
        most stages need nothing beyond their settings."""

    # --- running ----------------------------------------------------------------------

    def input_file(self, settings: S) -> Path | None:
        """The file this stage reads (hashed into its fingerprint), None for named baselines."""
        path = getattr(settings, "path", None)
        if isinstance(path, list):
            path = path[0] if path else None
        return _file(path)

    def skip_reason(self, settings: S) -> str | None:
        """Why this stage cannot run on this data (recorded as done, not run), else None."""
        return None

    def run(self, settings: S) -> dict[str, Any]:
        """Run the command's core function; returns its metrics."""
        module, function = self.core.split(":")
        result: dict[str, Any] = getattr(importlib.import_module(module), function)(settings)
        return result


def _file(path: str | None) -> Path | None:
    from tempo_cli import places

    if path is None or places.is_named_baseline(path):
        return None
    return places.resolve_checkpoint(path)


class DataStage(Stage[DataCheckSettings]):
    """`tempo data check` of the study's labelled data, against its pre-training data's
    frames, once per study (in the first arm's folder): the report's data section. Its
    options are the top-level ones (labelled, data, image_size, the split keys)."""

    def options(self, data: dict[str, Any]) -> dict | None:
        return None

    def wanted(self, study: Study, arm: Arm) -> bool:
        return arm.name == study.arms[0].name

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        run = {"name": inputs.name, "quiet": inputs.quiet, "debug": inputs.debug}
        frames = {"frames": study.data, "image_size": study.image_size}
        return {**run, **frames, "data": study.labelled, **study.split}

    def check(self, settings: DataCheckSettings) -> None:
        from tempo_cli.data.labelled_data import open_labelled

        # The labelled data in any form, split as every stage will split it: a bad manifest
        # row, a class too small to split ... stop the study before it starts. A dataset
        # name (demo, asl) is left to the stage: planning never generates or downloads.
        if Path(settings.data).expanduser().exists():
            open_labelled(settings.data, settings.split_options(), option="labelled")


class PretrainStage(Stage[PretrainSettings]):
    """The pre-training of a pre-training arm (its options: the arm's, not a stage table)."""

    def options(self, data: dict[str, Any]) -> dict | None:
        return None  # [pretrain] and [arms.NAME.pretrain]: parsed with the arms

    def wanted(self, study: Study, arm: Arm) -> bool:
        return arm.is_pretrain

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        # Pre-training repeats are seeds 0..N-1; the study's data, not its labelled set.
        top = {k: getattr(study, k) for k in ("data", "backbone", "image_size", "device")}
        run = {"name": inputs.name, "quiet": inputs.quiet, "debug": inputs.debug}
        return {**arm.pretrain, **top, **run, "seed": repeat or 0}

    def table(self, arm: Arm) -> str:
        return f"arms.{arm.name}.pretrain"

    def input_file(self, settings: PretrainSettings) -> Path | None:
        return _file(settings.init)


class ClassifierStage(Stage[EvalLinearSettings]):
    """The arm's linear probe at `classifier_samples_pc`, saved as classifier.pt: the
    linear table's probe options (not its sweep), then the `[classifier]` table's."""

    def options(self, data: dict[str, Any]) -> dict | None:
        sweep = STAGES["linear"].options(data) or {}
        linear = {k: v for k, v in sweep.items() if k not in _PER_SWEEP}
        own = super().options(data) or {}
        need("samples_pc" not in own, "[classifier] samples_pc", own.get("samples_pc"),
             "set classifier_samples_pc at the top level")  # fmt: skip
        return {**linear, **own}

    def wanted(self, study: Study, arm: Arm) -> bool:
        return any(STAGES[s].reads == "classifier" for s in study.stages)

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        values = super().values(study, arm, repeat, inputs)
        values["samples_pc"] = study.classifier_samples_pc
        values["save_model"] = str(inputs.folder / CLASSIFIER_FILE)
        return values

    def made_by(self, study: Study) -> str | None:
        """`linear` when its sweep trains this very probe (the same options, the budget in
        its samples_pc, the same labelled images): it saves it, trained once."""
        linear, own = study.stage_options.get("linear"), study.stage_options.get("classifier")
        if "linear" not in study.stages or linear is None or own is None:
            return None
        probe = {k: v for k, v in linear.items() if k not in _PER_SWEEP}
        at = parse_samples_pc(study.classifier_samples_pc)[0]
        drawn_anew = bool(linear.get("resample_labels")) and at is not None
        same = own == probe and at in _swept(linear["samples_pc"]) and not drawn_anew
        return "linear" if same else None


#: Linear options that describe the sweep, not the probe the classifier stage trains.
_PER_SWEEP = ("samples_pc", "resample_labels")


def _swept(samples_pc: Any) -> list[int | None]:
    """A study table's samples_pc (a string or a TOML list) as [N, ..., None = full]."""
    items = samples_pc if isinstance(samples_pc, list) else [samples_pc]
    return parse_samples_pc(",".join(str(v) for v in items))


class LinearStage(Stage[EvalLinearSettings]):
    """The linear sweep; it also saves the arm's classifier (the explanation stages' input)
    when the classifier stage's probe is one of its own (`ClassifierStage.made_by`)."""

    def provides_for(self, study: Study, arm: Arm) -> tuple[Input, str] | None:
        classifier = STAGES["classifier"]
        if classifier.wanted(study, arm) and classifier.made_by(study) == self.name:
            return ("classifier", CLASSIFIER_FILE)
        return None

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        values = super().values(study, arm, repeat, inputs)
        if self.provides_for(study, arm):
            values["save_model"] = str(inputs.folder / CLASSIFIER_FILE)
            values["save_samples_pc"] = study.classifier_samples_pc
        return values


class RelevanceStage(Stage[ExplainRelevanceSettings]):
    """Recorded done, not run, when the labelled data has no hand masks."""

    def skip_reason(self, settings: ExplainRelevanceSettings) -> str | None:
        from tempo_cli.data.datasets import resolve_dataset
        from tempo_cli.explain.relevance import find_masks, resolve_masks_dir

        try:
            folder, plain = resolve_masks_dir(settings.masks, resolve_dataset(settings.data))
        except TempoError as e:
            return f"no hand masks for {settings.data}: {e}"
        if not find_masks(folder, plain=plain):
            return f"no hand masks in {folder}"
        return None


class SegmentStage(Stage[SegmentSettings]):
    """`tempo segment` on COCO instances: the `[segment]` table's `data`, else the labelled
    data (whose mask sibling `resolve_segment_data` finds: demo -> demo_mask, ASL-big ->
    ASL_mask), at the table's `image_size`, else detectron2's sizes (the reference's)."""

    def values(self, study: Study, arm: Arm, repeat: int | None, inputs: StageInputs) -> dict:
        values = super().values(study, arm, repeat, inputs)
        if "image_size" not in study.stage_options.get(self.name, {}):
            values.pop("image_size", None)  # the classification size is no Mask R-CNN size
        return values

    def check(self, settings: SegmentSettings) -> None:
        from tempo_cli.segment.core import resolve_segment_data

        resolve_segment_data(settings.data)


_EVAL = "tempo_cli.evaluate.run:run_eval"
_SWEEP = {"samples_pc": DEFAULT_SAMPLES_PC}

#: Every stage, in the order they run for an arm (the internal ones first).
STAGES: dict[str, Stage[Any]] = {
    s.name: s
    for s in (
        DataStage("data", DataCheckSettings, "tempo_cli.data.check:run_data_check", reads=None,
                  internal=True, once=True),
        PretrainStage("pretrain", PretrainSettings, "tempo_cli.pretrain.loop:run", reads=None,
                      provides=("backbone", MODEL_FILE), internal=True, resumes=True),
        ClassifierStage("classifier", EvalLinearSettings, _EVAL, path_list=True,
                        provides=("classifier", CLASSIFIER_FILE), internal=True),
        LinearStage("linear", EvalLinearSettings, _EVAL, path_list=True, defaults=_SWEEP),
        Stage("semisup", EvalSemisupSettings, _EVAL, path_list=True, defaults=_SWEEP),
        Stage("knn", EvalKnnSettings, _EVAL, path_list=True, defaults=_SWEEP),
        Stage("embed", EmbedSettings, "tempo_cli.embed.run:run_embed", path_list=True,
              defaults={"map": True, "neighbours": True}),
        RelevanceStage("relevance", ExplainRelevanceSettings, "tempo_cli.explain.relevance:run",
                       reads="classifier"),
        Stage("lrp", ExplainLrpSettings, "tempo_cli.explain.lrp:run", reads="classifier"),
        Stage("noise", ExplainAdversarialSettings, "tempo_cli.explain.adversarial:run",
              reads="classifier", fixed={"attack": "noise"}),
        SegmentStage("segment", SegmentSettings, "tempo_cli.segment.core:run", path_list=True,
                     own_fields=frozenset({"data", "image_size"})),
    )
}  # fmt: skip


def selectable() -> tuple[str, ...]:
    """The stages a study file may select (`stages = [...]`), in run order."""
    return tuple(name for name, s in STAGES.items() if not s.internal)
