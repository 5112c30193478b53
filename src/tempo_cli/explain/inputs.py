"""What every explain command reads: the classifiers, and the split at their input size.

The split is listed first (a wrong `--split` fails before any checkpoint is read), then the
classifiers are loaded (their head's class names may come from the split's class
folders), and the images are decoded at `--image-size` (auto: the size `--path` records)
with `Resize(S, NEAREST)`, as the study's explanation pipeline did (SPEC.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.labelled import LabelledSplit, list_split, read_split
from tempo_cli.data.transforms import NEAREST
from tempo_cli.models.classifier import LoadedClassifier, load_classifiers
from tempo_cli.report.progress import log
from tempo_cli.settings.explain import ExplainSettings


@dataclass
class ExplainInputs:
    """images: uint8 (N, 3, S, S) with S = image_size; models: `--path`, then `--compare`."""

    images: LabelledSplit
    models: list[LoadedClassifier]
    image_size: int


def _size_warnings(settings: ExplainSettings, models: list[LoadedClassifier], size: int) -> None:
    """One line per classifier whose recorded input size is not the one used."""
    for m in models:
        warning = settings.image_size_warning(m.image_size, m.name)
        if warning is None and m.image_size is not None and m.image_size != size:
            warning = f"{m.name} was trained at {m.image_size} px; explaining at {size} px"
        if warning:
            log(f"warning: {warning}")


def load_inputs(settings: ExplainSettings) -> ExplainInputs:
    """`--data`/`--split` and `--path`/`--compare` of an explain command."""
    files = list_split(resolve_dataset(settings.data), settings.split, option="--split")
    models = load_classifiers(settings.path, settings.compare, files.present_classes)
    size = settings.resolved_image_size(models[0].image_size)
    _size_warnings(settings, models, size)
    classes = files.present_classes
    for m in models:
        if not set(classes) & set(m.class_names):
            log(
                f"warning: none of the split's classes ({', '.join(classes[:5])}...) "
                f"are classes of {m.name}; accuracies will be 0",
                settings.quiet,
            )
    images = read_split(files, size, settings.quiet, interpolation=NEAREST)
    return ExplainInputs(images, models, size)
