"""A backbone with a linear classification head, and loading one to explain.

- `Classifier`: `linear(backbone(x))`, what `tempo eval linear --save-model` writes.
- `head_class_names`: the class names of a head (the one class rule, `data.labelled`).
- `load_classifier(s)`: `--path` / `--compare` as a `LoadedClassifier` (eval mode, frozen),
  with `pixel_model` taking [0, 1] pixels (what attacks perturb).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tempo_cli.data import ASL_LETTERS
from tempo_cli.data.labelled import class_index
from tempo_cli.data.transforms import normalize
from tempo_cli.errors import TempoError
from tempo_cli.places import is_named_baseline


class Classifier(nn.Module):
    """`linear(backbone(x))`: images (N, 3, H, W) -> logits (N, C).

    `backbone` maps (N, 3, H, W) -> (N, d) (a ResNet with `fc = Identity`);
    `linear` is `nn.Linear(d, C)`.
    """

    def __init__(self, backbone: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C) logits."""
        return self.linear(torch.flatten(self.backbone(x), 1))


class PixelClassifier(nn.Module):
    """`classifier(normalize(x))` for x in [0, 1] pixel space: what attacks perturb."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C) logits."""
        return self.classifier(normalize(x))


def head_class_names(
    n_out: int, given: Sequence[str] | None = None, found: Iterable[str] = ()
) -> list[str] | None:
    """The class names of a head with `n_out` outputs (index = position), None if unknown.

    The names the checkpoint records when they fit; else the data's class rule
    (`data.labelled.class_index`) applied to the class folders `found`, or the folders in
    sorted order, whichever has `n_out` names; with no folders known, the ASL letters for
    24 outputs (reference checkpoints record no names).
    """
    if given is not None and len(given) == n_out:
        return list(given)
    names = sorted(set(found))
    for candidate in (class_index(names) if names else list(ASL_LETTERS), names):
        if len(candidate) == n_out:
            return candidate
    return None


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


@dataclass
class LoadedClassifier:
    """A classifier to explain: `classifier` maps normalised images to logits (eval mode).

    `class_names`: the head's C class names; `image_size`: the input side the checkpoint
    records (None: it records none).
    """

    name: str
    checkpoint: str
    classifier: nn.Module
    class_names: list[str]
    arch: str = ""
    image_size: int | None = None
    pixel_model: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.pixel_model = PixelClassifier(self.classifier).eval()

    def to(self, device: torch.device) -> LoadedClassifier:
        self.classifier.to(device)
        return self

    def label_indices(self, labels: Sequence[str]) -> torch.Tensor:
        """LongTensor (N,) of the labels' indices in this head (-1: not one of its classes)."""
        index = {c: k for k, c in reversed(list(enumerate(self.class_names)))}
        return torch.tensor([index.get(lab, -1) for lab in labels], dtype=torch.long)


def load_classifier(spec: str, split_classes: Sequence[str] = ()) -> LoadedClassifier:
    """Load `--path`/`--compare` as a classifier; TempoError when it has no linear head.

    `split_classes`: the class folders of the data it will explain (names a head whose
    checkpoint records none, see `head_class_names`).
    """
    from tempo_cli.models.checkpoint import load_model

    if is_named_baseline(spec):
        raise TempoError(no_head_message(spec))
    loaded = load_model(spec)
    if loaded.linear is None:
        raise TempoError(no_head_message(spec))
    n_out = loaded.linear.out_features
    classifier = Classifier(loaded.backbone, loaded.linear).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    names = head_class_names(n_out, loaded.class_names, split_classes)
    return LoadedClassifier(
        name=_safe_name(str(loaded.name or Path(str(spec)).stem)),
        checkpoint=str(loaded.path) if loaded.path else str(spec),
        classifier=classifier,
        class_names=names or [str(i) for i in range(n_out)],
        arch=str(loaded.arch),
        image_size=loaded.image_size,
    )


def load_classifiers(
    path: str, compare: str | None, split_classes: Sequence[str] = ()
) -> list[LoadedClassifier]:
    """`--path` and the optional `--compare`, with distinct file-name-safe names."""
    models = [load_classifier(path, split_classes)]
    if compare:
        models.append(load_classifier(compare, split_classes))
    if len(models) == 2 and models[0].name == models[1].name:
        models[0].name += "-1"
        models[1].name += "-2"
    return models
