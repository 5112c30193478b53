"""What every explain command reads: the classifiers, and the split at their input size.

The split is listed first (a wrong `--split` fails before any checkpoint is read), then the
classifiers are loaded (their head's class names may come from the split's class
folders), and the images are decoded at `--image-size` (auto: the size `--path` records)
with `Resize(S, NEAREST)`, as the study's explanation pipeline did (SPEC.md).

`--images DIR` (lrp, adversarial) replaces the split by a flat folder of unlabelled
photos, as the study's figures of its own photos did: every image's label is -1 (no class)
and files are named after the image's ID (its file name without extension).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tempo_cli.data.frames import IMAGE_EXTS, iter_image_chunks, list_images
from tempo_cli.data.labelled import LabelledSplit, list_split, read_split
from tempo_cli.data.labelled_data import open_labelled
from tempo_cli.data.transforms import NEAREST
from tempo_cli.errors import UsageError
from tempo_cli.models.classifier import LoadedClassifier, load_classifiers
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.settings.explain import ExplainSettings


@dataclass
class ExplainInputs:
    """images: uint8 (N, 3, S, S) with S = image_size; models: `--path`, then `--compare`.

    labelled False (`--images`): labels are -1, `class_names` empty, `split` the folder's
    name; use `tags` and `targets`, never `images.label_names`.
    """

    images: LabelledSplit
    models: list[LoadedClassifier]
    image_size: int
    labelled: bool = True

    @property
    def tags(self) -> list[str]:
        """What names each image in file names: its class, or (unlabelled) its ID."""
        return self.images.label_names if self.labelled else self.images.ids

    def targets(self, model: LoadedClassifier) -> torch.Tensor:
        """LongTensor (N,): each image's class in `model`'s head; -1 = none (unlabelled)."""
        if not self.labelled:
            return torch.full((len(self.images),), -1, dtype=torch.long)
        return model.label_indices(self.images.label_names)


def _size_warnings(settings: ExplainSettings, models: list[LoadedClassifier], size: int) -> None:
    """One line per classifier whose recorded input size is not the one used."""
    for m in models:
        warning = settings.image_size_warning(m.image_size, m.name)
        if warning is None and m.image_size is not None and m.image_size != size:
            warning = f"{m.name} was trained at {m.image_size} px; explaining at {size} px"
        if warning:
            log(f"warning: {warning}")


def _flat_images(folder: str) -> list[Path]:
    """The images of `--images DIR` (UsageError: not a folder, or no image directly in it)."""
    allowed = f"a flat folder of images ({', '.join(IMAGE_EXTS)}); class folders go with --data"
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UsageError("--images", folder, allowed)
    paths = list_images(root)
    if not paths:
        raise UsageError("--images", folder, f"no image in it; {allowed}")
    return paths


def load_unlabelled(settings: ExplainSettings, folder: str) -> ExplainInputs:
    """`--images DIR` and `--path`/`--compare`: every image of DIR, unlabelled."""
    paths = _flat_images(folder)
    models = load_classifiers(settings.path, settings.compare)
    size = settings.resolved_image_size(models[0].image_size)
    _size_warnings(settings, models, size)
    with ProgressBar(len(paths), "loading images", settings.quiet) as bar:
        chunks = list(iter_image_chunks(paths, size, bar.advance, interpolation=NEAREST))
    labels = torch.full((len(paths),), -1, dtype=torch.long)
    root = paths[0].parent
    images = LabelledSplit(torch.cat(chunks), labels, [], paths, root, root.name)
    return ExplainInputs(images, models, size, labelled=False)


def load_inputs(settings: ExplainSettings, images: str | None = None) -> ExplainInputs:
    """`--data`/`--split` (or `--images DIR`) and `--path`/`--compare` of a command."""
    if images is not None:
        return load_unlabelled(settings, images)
    data = open_labelled(settings.data, settings.split_options())
    files = list_split(data, settings.split, option="--split")
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
