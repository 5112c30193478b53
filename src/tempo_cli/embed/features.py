"""One checkpoint's features of the embedded split (and of the neighbours' split), made
exactly as `tempo eval` makes them: the same `FeatureSource`, recipe and disk cache, so a
checkpoint `tempo eval` has seen is not run again, and features made here serve it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from tempo_cli.embed.images import ImageSet
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.evaluate.batchnorm import BnBatches
from tempo_cli.evaluate.checkpoints import Checkpoint
from tempo_cli.evaluate.features import FeatureRecipe, FeatureSet, FeatureSource
from tempo_cli.report.progress import log
from tempo_cli.settings.embed import EmbedSettings

if TYPE_CHECKING:
    from tempo_cli.data.labelled_data import LabelledData


@dataclass
class Embedding:
    """Features of one checkpoint.

    label: the checkpoint's short name (tables, files); spec: its `--path` value;
    features: float32 (N, d), row i = image i of the embedded split; reference: float32
    (M, d) of the neighbours' split, None when neighbours come from the split itself;
    image_size: the side the images were resized to; cached: every feature set came from
    the feature cache (nothing computed).
    """

    label: str
    spec: str
    features: np.ndarray
    reference: np.ndarray | None
    image_size: int
    cached: bool

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def check_bn_stats(settings: EmbedSettings, reference: ImageSet | None) -> None:
    """batch and adapt make features from train batches; without a train split, exit 2."""
    if reference is None and settings.bn_stats != "running":
        raise UsageError(
            "--bn-stats",
            settings.bn_stats,
            "running (batch and adapt need a train split beside --split, which this data lacks)",
        )


def _check_rows(fs: FeatureSet, images: ImageSet) -> None:
    """The features' rows are the listing's images (one loader makes both)."""
    if len(fs) != len(images) or not np.array_equal(fs.labels.numpy(), images.labels):
        raise TempoError(
            f"features of {images.split} do not match its {len(images)} files; "
            "the folder changed while tempo read it: run again"
        )


def embed_checkpoint(
    ck: Checkpoint,
    settings: EmbedSettings,
    data: LabelledData,
    images: ImageSet,
    reference: ImageSet | None,
    device: torch.device,
) -> Embedding:
    """The features of `images` (and `reference`) under `ck`, from the cache when there."""
    recorded = ck.recorded_image_size
    warning = settings.image_size_warning(recorded, ck.label)
    if warning:
        log(f"warning: {warning}")
    image_size = settings.resolved_image_size(recorded)
    recipe = FeatureRecipe(
        image_size, settings.bn_stats, settings.seed, BnBatches(*settings.bn_batches())
    )
    source = FeatureSource(ck.id, lambda: ck.model().backbone, data, recipe, device, settings.quiet)
    if reference is None:
        (split,) = source.sets(images.split, ())
        ref = None
    else:
        ref, split = source.sets(reference.split, (images.split,))
        _check_rows(ref, reference)
    _check_rows(split, images)
    return Embedding(
        label=ck.label,
        spec=ck.spec,
        features=split.features.numpy().astype(np.float32),
        reference=None if ref is None else ref.features.numpy().astype(np.float32),
        image_size=image_size,
        cached=split.cached and (ref is None or ref.cached),
    )
