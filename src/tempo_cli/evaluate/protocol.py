"""What an evaluation protocol is, and the one (checkpoint, split) task it is given.

A protocol is a small object registered in `evaluate/protocols.py`: its name (the
`tempo eval` subcommand), its settings class, the figures its curves make sense in, and
`evaluate(task) -> CurveResult`. The task hands it what it asks for (a source of cached
frozen features, decoded images, the loaded model), so `evaluate/run.py` knows no protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from tempo_cli.evaluate.checkpoints import Checkpoint
from tempo_cli.evaluate.features import FeatureRecipe, FeatureSource
from tempo_cli.evaluate.results import CurveResult
from tempo_cli.report.progress import ProgressBar

if TYPE_CHECKING:
    from tempo_cli.data.labelled import LabelledSplit
    from tempo_cli.evaluate.train_labels import TrainingLabels
    from tempo_cli.settings.evaluate import EvalSettings

#: Figures a protocol may ask for (file names in the run folder).
CURVES_FIGURE = "curves.png"
SWEEP_FIGURE = "accuracy_vs_samples.png"


@dataclass
class Task:
    """Evaluate `checkpoint` trained on `labels` (a `train-N` folder, or subsets drawn
    from `train`), tested on `test`; choices (best run, best lr) made on `val_split` when
    the root has one (None: on test).

    `image_size` is resolved for this checkpoint (`--image-size auto` = what it records).
    `shared` is kept across the splits of one checkpoint (its feature sources, so that
    e.g. its test features are computed once).
    """

    settings: EvalSettings
    checkpoint: Checkpoint
    labels: TrainingLabels
    root: Path
    image_size: int
    device: torch.device
    shared: dict[FeatureRecipe, FeatureSource] = field(default_factory=dict)
    val_split: str | None = None

    @property
    def label(self) -> str:
        return self.checkpoint.label

    @property
    def samples_pc(self) -> int | None:
        return self.labels.samples_pc

    @property
    def split(self) -> str:
        """The folder the training images come from."""
        return self.labels.split

    @property
    def sub(self) -> str:
        """The split's TensorBoard sub-folder: the reference's `str(samples_pc)`."""
        return str(self.samples_pc)

    def feature_source(self, recipe: FeatureRecipe) -> FeatureSource:
        """Frozen-backbone features of this checkpoint made as `recipe` says (from the
        cache when present); one source per recipe for all splits of the checkpoint."""
        if recipe not in self.shared:
            ck, s = self.checkpoint, self.settings
            self.shared[recipe] = FeatureSource(
                ck.id, lambda: ck.model().backbone, self.root, recipe, self.device, s.quiet
            )
        return self.shared[recipe]

    def images(self, split: str) -> LabelledSplit:
        """Decoded uint8 images (N, 3, S, S) and labels of `<root>/<split>`."""
        from tempo_cli.data.labelled import load_split

        return load_split(self.root, split, self.image_size, quiet=self.settings.quiet)

    def description(self, protocol: str) -> str:
        """The progress bar's label, e.g. `linear demo-model 5`."""
        return f"{protocol} {self.label} {self.sub}"

    def progress(self, protocol: str, total: int) -> ProgressBar:
        return ProgressBar(total, self.description(protocol), self.settings.quiet)


class EvalProtocol(ABC):
    """Base of the registered protocols (`evaluate/protocols.py`).

    name: the `tempo eval` subcommand and the `protocol` of metrics.json.
    settings_cls: its settings class (the registry finds a protocol by its settings).
    figures: which of CURVES_FIGURE (accuracy per step; a one-step protocol has no curve)
        and SWEEP_FIGURE (final accuracy against samples per class) it draws.
    """

    name: ClassVar[str]
    settings_cls: ClassVar[type[EvalSettings]]
    figures: ClassVar[tuple[str, ...]] = (CURVES_FIGURE, SWEEP_FIGURE)

    @abstractmethod
    def evaluate(self, task: Task) -> list[CurveResult]:
        """Accuracy curves (runs, steps) of this protocol on one task: one result, or one
        per learning rate of a grid (exactly one of them `selected`)."""
