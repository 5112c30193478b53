"""Images and classifiers shared by the explain commands.

Images are read as SPEC.md's explanation pipeline does: `Resize(S, NEAREST)` (shorter
side) and, for non-square photos only, a centre crop to S x S so a split stacks into one
tensor. They are kept as uint8 (N, 3, S, S); `pixels()` gives float [0, 1] and
`normalize()` the ImageNet-normalised input of the classifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from tempo_cli.data import ASL_LETTERS
from tempo_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.report.progress import ProgressBar, log


@dataclass
class ExplainImages:
    """A labelled split, resized with NEAREST.

    images: uint8 (N, 3, S, S); labels: class name (folder) per image; paths: the files.
    """

    images: torch.Tensor
    labels: list[str]
    paths: list[Path]
    class_names: list[str]
    root: Path
    split: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def ids(self) -> list[str]:
        """Image IDs = file names without extension (how masks are matched)."""
        return [p.stem for p in self.paths]

    def pixels(self, index: slice | torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """float32 (n, 3, S, S) in [0, 1] (ToTensor) for `index` (None = all)."""
        x = self.images if index is None else self.images[index]
        return x.float() / 255.0


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels (N, 3, H, W) -> ImageNet-normalised (N, 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class PixelClassifier(nn.Module):
    """`classifier(normalize(x))` for x in [0, 1] pixel space: what attacks perturb."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C) logits."""
        return self.classifier(normalize(x))


def resolve_data_root(data: str) -> Path:
    """`--data` -> dataset root (via data.datasets.resolve_dataset: demo is generated)."""
    from tempo_cli.data.datasets import resolve_dataset

    return Path(resolve_dataset(data))


def _split_dir(root: Path, split: str) -> Path:
    """`root/split`, matched case-insensitively; UsageError listing what exists."""
    exact = root / split
    if exact.is_dir():
        return exact
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name.lower() == split.lower():
                return p
        available = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and any(c.is_dir() for c in p.iterdir()) and p.name not in {"frames"}
        )
    else:
        available = []
    raise UsageError("--split", split, "available: " + (", ".join(available) or "none"))


def load_image_nearest(path: Path, size: int) -> torch.Tensor:
    """One image -> uint8 (3, S, S): Resize(S, NEAREST) of the shorter side, centre crop."""
    from tempo_cli.data.frames import read_image

    image = read_image(path)
    image = F.resize(image, size, interpolation=InterpolationMode.NEAREST)
    if image.size != (size, size):
        image = F.center_crop(image, [size, size])
    return F.pil_to_tensor(image)


def load_images(data: str, split: str, image_size: int, quiet: bool = False) -> ExplainImages:
    """The labelled images of `<data>/<split>/<CLASS>/*` (sorted by class, then file name)."""
    from tempo_cli.data.frames import list_images

    root = resolve_data_root(data)
    split_dir = _split_dir(root, split)
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[str] = []
    for d in class_dirs:
        for p in list_images(d):
            paths.append(p)
            labels.append(d.name)
    if not paths:
        raise TempoError(
            f"no labelled images in {split_dir} (expected <CLASS>/<image>.png); check --data"
        )
    images = []
    with ProgressBar(len(paths), f"reading {split}", quiet) as bar:
        for p in paths:
            images.append(load_image_nearest(p, image_size))
            bar.advance(1)
    return ExplainImages(
        images=torch.stack(images),
        labels=labels,
        paths=paths,
        class_names=[d.name for d in class_dirs if any(lab == d.name for lab in labels)],
        root=root,
        split=split_dir.name,
    )


@dataclass
class ExplainModel:
    """A classifier to explain: `classifier` maps normalised images to logits (eval mode)."""

    name: str
    checkpoint: str
    classifier: nn.Module
    class_names: list[str]
    arch: str = ""
    pixel_model: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.pixel_model = PixelClassifier(self.classifier).eval()

    def to(self, device: torch.device) -> ExplainModel:
        self.classifier.to(device)
        return self

    def label_index(self, label: str) -> int:
        """Index of class `label` in this model's head, or -1 if it has no such class."""
        try:
            return self.class_names.index(label)
        except ValueError:
            return -1


def no_head_message(spec: str) -> str:
    """The one line for a checkpoint without a linear classification head."""
    return (
        f"{spec} has no linear classification head (explain needs a classifier); create one "
        f"with `tempo eval linear --path {spec} --save-model FILE` and pass --path FILE"
    )


def _safe_name(name: str) -> str:
    """A model name usable inside file names (letters, digits, dot, dash, underscore)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return name or "model"


def _class_names(given: list[str] | None, n_out: int, split_classes: list[str]) -> list[str]:
    """The head's class names; reference checkpoints carry none (ASL order then)."""
    if given and len(given) == n_out:
        return list(given)
    if n_out == len(ASL_LETTERS) and (not split_classes or set(split_classes) <= set(ASL_LETTERS)):
        return list(ASL_LETTERS)
    if n_out == len(split_classes):
        return sorted(split_classes)
    return [str(i) for i in range(n_out)]


def load_classifier(spec: str, split_classes: list[str]) -> ExplainModel:
    """Load `--path`/`--compare` as a classifier; TempoError when it has no linear head."""
    from tempo_cli.models.checkpoint import load_model
    from tempo_cli.models.classifier import Classifier

    if spec in ("random", "imagenet"):
        raise TempoError(no_head_message(spec))
    loaded = load_model(spec)
    if loaded.linear is None:
        raise TempoError(no_head_message(spec))
    linear = loaded.linear
    classifier = Classifier(loaded.backbone, linear).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    name = getattr(loaded, "name", None) or Path(str(spec)).stem
    path = getattr(loaded, "path", None)
    return ExplainModel(
        name=_safe_name(str(name)),
        checkpoint=str(path) if path else str(spec),
        classifier=classifier,
        class_names=_class_names(loaded.class_names, linear.out_features, split_classes),
        arch=str(getattr(loaded, "arch", "")),
    )


def load_classifiers(
    path: str, compare: str | None, split_classes: list[str], quiet: bool = False
) -> list[ExplainModel]:
    """`--path` and the optional `--compare`, with distinct file-name-safe names."""
    models = [load_classifier(path, split_classes)]
    if compare:
        models.append(load_classifier(compare, split_classes))
    if len(models) == 2 and models[0].name == models[1].name:
        models[0].name += "-1"
        models[1].name += "-2"
    for m in models:
        known = sum(1 for c in split_classes if c in m.class_names)
        if split_classes and known == 0:
            log(
                f"warning: none of the split's classes ({', '.join(split_classes[:5])}...) "
                f"are classes of {m.name}; accuracies will be 0",
                quiet,
            )
    return models


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering range(n)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def predict(
    model: ExplainModel, pixels: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Predicted class indices (N,) of [0, 1] pixels (N, 3, H, W)."""
    out = []
    for s in batches(pixels.shape[0], batch_size):
        out.append(model.pixel_model(pixels[s].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def label_indices(model: ExplainModel, labels: list[str]) -> torch.Tensor:
    """LongTensor (N,) of the labels' indices in the model's head (-1 = unknown class)."""
    return torch.tensor([model.label_index(lab) for lab in labels], dtype=torch.long)


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of preds equal to targets (an unknown class, -1, is always wrong)."""
    if preds.numel() == 0:
        return float("nan")
    return float((preds == targets).float().mean())
