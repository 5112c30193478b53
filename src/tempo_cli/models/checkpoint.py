"""Checkpoints: the product format (one save/load pair) and `load_model` for every format.

Product format (`save_checkpoint`, one `torch.save` file, loadable with weights_only=True):

    {"format": "tempo-checkpoint", "version": 1,
     "arch": "resnet34",
     "backbone": torchvision ResNet state dict without fc (conv1.weight, bn1.*, layer1..4.*),
     "head": ProjectionHead state dict (0.weight ... 6.bias) or None,
     "linear": {"weight": (C, d), "bias": (C,)} or None,
     "class_names": [str] * C or None,
     "image_size": int (the input side it was trained or probed at) or None,
     "meta": JSON-like dict (settings, epoch, step, ...),
     "training_state": dict (optimiser state, RNG state, ...) or None}

Files written before `image_size` existed lack the key and load with `image_size=None`.

`load_model(spec)` also reads the reference, torchvision and detectron2 formats
(`models/foreign_formats.py`), `.safetensors` files and model folders
(`models/safetensors_format.py`) and the words "random" and "imagenet". The architecture is
inferred from the weights; the `arch` argument only matters for "random" and "imagenet".
Content ids for caches are in `models/content_id.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import atomic, places
from tempo_cli.errors import TempoError
from tempo_cli.models.backbones import FEATURE_DIM, build_resnet, check_arch, imagenet_state_dict
from tempo_cli.models.classifier import Classifier, head_class_names
from tempo_cli.models.foreign_formats import (
    CheckpointParts,
    parse_foreign,
    read_checkpoint_file,
    split_state,
    strip_wrappers,
)
from tempo_cli.models.from_state import backbone_from_state, head_from_state, linear_from_state
from tempo_cli.models.projection_head import ProjectionHead
from tempo_cli.models.safetensors_format import SafetensorsFile, read_model_folder

FORMAT = "tempo-checkpoint"
VERSION = 1
DEFAULT_ARCH = "resnet34"


@dataclass
class LoadedModel:
    """A loaded checkpoint. `backbone`: ResNet with fc = Identity, (N,3,H,W) -> (N,d).

    `image_size`: the input side the checkpoint was trained or probed at, None when the
    file does not record it (foreign formats, "random", "imagenet", older product files).
    """

    arch: str
    backbone: nn.Module
    feature_dim: int
    head: ProjectionHead | None = None
    linear: nn.Linear | None = None
    class_names: list[str] | None = None
    # product|reference|torchvision|detectron2|safetensors|folder|random|imagenet
    source_format: str = "product"
    meta: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    path: Path | None = None
    name: str = ""
    image_size: int | None = None

    def classifier(self) -> Classifier:
        """`Classifier(backbone, linear)`; TempoError when the checkpoint has no linear head."""
        if self.linear is None:
            raise TempoError(f"checkpoint {self.name} has no linear classification head")
        return Classifier(self.backbone, self.linear)


# --- saving ------------------------------------------------------------------------------


def _plain_state(module_or_state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, detached state dict without DDP/compile prefixes."""
    if isinstance(module_or_state, nn.Module):
        state = module_or_state.state_dict()
    else:
        state = module_or_state
    return {
        strip_wrappers(k): v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
        for k, v in state.items()
    }


def _jsonable(obj: Any) -> Any:
    """Make `meta` loadable with weights_only=True (paths etc. become strings)."""
    return json.loads(json.dumps(obj, default=str))


def save_checkpoint(
    path: str | Path,
    *,
    arch: str,
    backbone: nn.Module | dict[str, torch.Tensor],
    head: nn.Module | dict[str, torch.Tensor] | None = None,
    linear: nn.Linear | dict[str, torch.Tensor] | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    meta: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the product format to `path` atomically and return the path.

    `image_size` is the input side (pixels) the weights were trained or probed at.
    `training_state` must hold only what `torch.load(weights_only=True)` accepts
    (tensors, dicts, lists, numbers, strings): e.g. `optimizer.state_dict()` and
    `capture_rng_state()`.
    """
    check_arch(arch, "arch")
    bb = {k: v for k, v in _plain_state(backbone).items() if not k.startswith("fc.")}
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "backbone": bb,
        "head": _plain_state(head) if head is not None else None,
        "linear": _plain_state(linear) if linear is not None else None,
        "class_names": list(class_names) if class_names is not None else None,
        "image_size": int(image_size) if image_size is not None else None,
        "meta": _jsonable(meta or {}),
        "training_state": training_state,
    }
    atomic.torch_save(obj, path)
    return Path(path)


# --- loading -----------------------------------------------------------------------------


def resolve_spec(spec: str | Path) -> Path:
    """`--path` value -> an existing file or model folder (the path, else a name in the
    model dir)."""
    p = places.resolve_checkpoint(spec)
    if not (p.is_file() or p.is_dir()):
        where = f"{Path(spec).expanduser()} or {places.model_dir() / str(spec)}"
        raise TempoError(
            f"checkpoint {spec!s} not found (looked at {where}); give an existing file, "
            "random, imagenet, or run `tempo download models`"
        )
    return p


def _parse(obj: Any, path: Path) -> CheckpointParts:
    """What the file held -> parts (the product format here, the others in foreign_formats)."""
    if isinstance(obj, SafetensorsFile):
        return _safetensors_parts(obj, path, "safetensors")
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        return parse_foreign(obj, path)
    return CheckpointParts(
        "product",
        obj["backbone"],
        head=obj.get("head"),
        linear=obj.get("linear"),
        class_names=obj.get("class_names"),
        meta=dict(obj.get("meta") or {}),
        training_state=obj.get("training_state"),
        image_size=obj.get("image_size"),
    )


def _safetensors_parts(st: SafetensorsFile, path: Path, fmt: str) -> CheckpointParts:
    """A safetensors file's tensors sorted by role, its header's record kept."""
    parts = split_state(dict(st.tensors), path)
    parts.fmt = fmt
    parts.meta = st.meta()
    parts.image_size = st.image_size()
    return parts


def _folder_parts(path: Path) -> CheckpointParts:
    """A model folder's parts; TempoError when config.json names an architecture that
    tempo does not build (its weights are then checked against it in `load_model`)."""
    st, config = read_model_folder(path)
    arch = str(config["architecture"]).split(".")[0]  # timm's `resnet18.a1_in1k` -> resnet18
    if arch not in FEATURE_DIM:
        raise TempoError(
            f"cannot load checkpoint {path}: config.json's architecture {arch} is not one "
            f"tempo builds ({', '.join(FEATURE_DIM)})"
        )
    parts = _safetensors_parts(st, path, "folder")
    parts.meta["config_architecture"] = arch
    return parts


def _build(parts: CheckpointParts, path: Path) -> LoadedModel:
    """Modules from the parts; TempoError naming `path` when a part does not fit."""
    try:
        arch, backbone = backbone_from_state(parts.backbone)
    except (TempoError, RuntimeError) as e:
        raise TempoError(f"cannot load checkpoint {path}: {str(e).splitlines()[0]}") from None
    head = None
    if parts.head:
        try:
            head = head_from_state(parts.head)
        except (KeyError, RuntimeError, ValueError) as e:
            raise TempoError(f"cannot load checkpoint {path}: bad projection head ({e})") from None
    linear = None
    class_names = parts.class_names
    if parts.linear:
        try:
            linear = linear_from_state(parts.linear)
        except (KeyError, RuntimeError, IndexError, ValueError) as e:
            raise TempoError(f"cannot load checkpoint {path}: bad linear head ({e})") from None
        if linear.in_features != FEATURE_DIM[arch]:
            raise TempoError(
                f"cannot load checkpoint {path}: linear head takes {linear.in_features} "
                f"features, {arch} gives {FEATURE_DIM[arch]}"
            )
        if class_names is None:
            class_names = head_class_names(linear.out_features)  # ASL letters for 24
    return LoadedModel(
        arch=arch,
        backbone=backbone,
        feature_dim=FEATURE_DIM[arch],
        head=head,
        linear=linear,
        class_names=class_names,
        source_format=parts.fmt,
        meta=parts.meta,
        training_state=parts.training_state,
        path=path,
        name=path.stem,
        image_size=parts.image_size,
    )


def load_model(
    spec: str | Path, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> LoadedModel:
    """Load `spec` ("random", "imagenet", a file, or a name in the model dir).

    `arch` is needed for "random"/"imagenet" (default resnet34) and ignored for files,
    whose architecture is inferred from the weights. Modules are returned on CPU in
    train mode (callers move them); `training_state` tensors go to `map_location`.
    Raises TempoError naming the file when it is missing, truncated or foreign.
    """
    if places.is_named_baseline(spec):
        a = check_arch(arch or DEFAULT_ARCH)
        return LoadedModel(
            arch=a,
            backbone=build_resnet(a, str(spec)),
            feature_dim=FEATURE_DIM[a],
            source_format=str(spec),
            name=str(spec),
        )
    path = resolve_spec(spec)
    if path.is_dir():
        model = _build(_folder_parts(path), path)
        named = model.meta.pop("config_architecture")
        if named != model.arch:
            raise TempoError(
                f"cannot load checkpoint {path}: config.json says {named}, but "
                f"model.safetensors holds {model.arch} weights; export the folder again"
            )
        return model
    obj, kind = read_checkpoint_file(path, map_location)
    parts = _parse(obj, path)
    if kind == "detectron2":
        parts.fmt = "detectron2"
    return _build(parts, path)


def load_resnet_state(
    spec: str | Path, arch: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """(arch, torchvision-keyed ResNet state dict without fc) for any spec load_model takes.

    "imagenet" returns the torchvision weights, "random" a freshly initialised ResNet.
    """
    if places.is_named_baseline(spec) and str(spec) == "imagenet":
        a = check_arch(arch or DEFAULT_ARCH)
        return a, {k: v for k, v in imagenet_state_dict(a).items() if not k.startswith("fc.")}
    m = load_model(spec, arch)
    return m.arch, {k: v.detach().clone() for k, v in m.backbone.state_dict().items()}


__all__ = [
    "DEFAULT_ARCH",
    "FORMAT",
    "VERSION",
    "LoadedModel",
    "load_model",
    "load_resnet_state",
    "resolve_spec",
    "save_checkpoint",
]
