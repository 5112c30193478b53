"""safetensors files and model folders: how tempo reads and writes them.

A `.safetensors` file holds the backbone's torchvision/timm ResNet weights (`conv1.weight`,
`bn1.*`, `layer1..4.*`, BatchNorm `num_batches_tracked` included, no `fc.*`) and string
header metadata (`METADATA_KEYS`). A model folder, in the layout the Hugging Face Hub uses,
holds `model.safetensors`, `config.json` in timm's pretrained-config shape and `README.md`
(the model card, `models/model_card.py`).

Reading never unpickles: a file named `.safetensors` is read only as safetensors, and one
whose bytes are something else (a pickle or a torch zip renamed) is refused with one line.
A file with another suffix whose header is safetensors' is read as safetensors too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tempo_cli.errors import TempoError

SUFFIX = ".safetensors"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
#: What tempo writes into a safetensors header (all values are strings; JSON where noted).
METADATA_KEYS = (
    "format",  # "pt": the Hugging Face convention for PyTorch tensors
    "architecture",  # resnet18 | resnet34 | resnet50 (timm's and torchvision's name)
    "input_size",  # JSON [3, H, W]: the side it was trained or probed at (224 when unknown)
    "image_size",  # the recorded side alone; absent when the checkpoint recorded none
    "mean",  # JSON [r, g, b]: the normalisation the features expect
    "std",  # JSON [r, g, b]
    "tempo_version",
    "source_format",  # product | reference | torchvision | detectron2 | random | imagenet ...
    "source_content_id",  # tempo's content id of the source checkpoint (sha256, 16 hex)
    "pretrain",  # JSON: the pre-training settings, when the checkpoint records them
    "epoch",  # the pre-training's last epoch and step, when recorded
    "step",
    "evaluation",  # JSON: what a study measured of the arm (`--study --arm`), when given
)
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


@dataclass
class SafetensorsFile:
    """What a safetensors file held: tensors by name and the header's metadata strings."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    def image_size(self) -> int | None:
        """The recorded input side (metadata `image_size`), None when absent or not a number."""
        value = self.metadata.get("image_size", "")
        return int(value) if value.isdigit() else None

    def meta(self) -> dict[str, Any]:
        """The metadata as `LoadedModel.meta`: JSON values decoded, the rest as strings."""
        meta: dict[str, Any] = {}
        for key, value in self.metadata.items():
            if key in ("pretrain", "input_size", "mean", "std", "evaluation", "epoch", "step"):
                try:
                    meta[key] = json.loads(value)
                    continue
                except json.JSONDecodeError:
                    pass
            meta[key] = value
        if isinstance(meta.get("pretrain"), dict):
            meta["settings"] = meta["pretrain"]  # where product checkpoints keep them
        return meta


def looks_like_safetensors(path: Path) -> bool:
    """True when the file starts as safetensors does: an 8-byte little-endian header
    length that fits the file, then the JSON header's `{`. A pickle (`\\x80`) or a zip
    (`PK`) never does, so telling them apart reads 9 bytes and unpickles nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(size - 8, _MAX_HEADER) and head[8:9] == b"{"


def _what_it_is(path: Path) -> str:
    """A few words on what a file that is not safetensors holds (from its first bytes)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "it is empty"
    if head.startswith(b"PK"):
        return "it is a PyTorch zip file renamed (refused, not unpickled)"
    if head[:1] == b"\x80":
        return "it is a pickle renamed (refused, not unpickled)"
    return "it is not a safetensors file (refused)"


def read_safetensors(path: Path, tensors: bool = True) -> SafetensorsFile:
    """Read a safetensors file (memory-mapped) -> SafetensorsFile.

    `tensors=False` reads the header alone (the metadata; no tensor is read). Raises
    TempoError naming the file when its bytes are not safetensors (nothing is
    unpickled), or when it is truncated or corrupt.
    """
    want = tensors
    from safetensors import SafetensorError, safe_open

    if not looks_like_safetensors(path):
        try:
            why = _what_it_is(path)
        except OSError as e:
            raise TempoError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
        hint = (
            "; if it is a torch file, name it .pt (read with weights_only), or convert it "
            "with `tempo export --format safetensors`"
        )
        raise TempoError(f"cannot load checkpoint {path}: {why}{hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            names = list(f.keys()) if want else []
            found = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TempoError(
            f"cannot load checkpoint {path}: truncated or corrupt safetensors file ({first}); "
            "export it again"
        ) from None
    return SafetensorsFile(found, metadata)


def is_safetensors_checkpoint(path: Path) -> bool:
    """True when `path` is read as safetensors: a model folder, a `.safetensors` name, or
    safetensors bytes under another name (so no caller ever torch.loads it)."""
    return path.is_dir() or path.suffix.lower() == SUFFIX or looks_like_safetensors(path)


def recorded_image_size(path: Path) -> int | None:
    """The input side a safetensors file or model folder records (its header alone), or
    None; TempoError as `read_safetensors` / `folder_weights` for a bad one."""
    return read_safetensors(folder_weights(path) if path.is_dir() else path, False).image_size()


# --- model folders -----------------------------------------------------------------------


def folder_weights(path: Path) -> Path:
    """The model.safetensors of model folder `path`; TempoError when a needed file is missing."""
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not (path / n).is_file()]
    if missing:
        raise TempoError(
            f"cannot load checkpoint {path}: the folder has no {' and no '.join(missing)} "
            "(a model folder is what `tempo export --format folder` writes)"
        )
    return path / WEIGHTS_FILE


def read_model_folder(path: Path) -> tuple[SafetensorsFile, dict[str, Any]]:
    """(weights, config.json) of a model folder; TempoError naming what is missing or bad."""
    weights = folder_weights(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TempoError(
            f"cannot load checkpoint {path}: {CONFIG_FILE} is not readable JSON ({e})"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise TempoError(
            f"cannot load checkpoint {path}: {CONFIG_FILE} names no architecture "
            '(timm\'s shape: {"architecture": "resnet18", ...})'
        )
    return read_safetensors(weights), config


def timm_config(
    arch: str, feature_dim: int, metadata: dict[str, str], card: dict[str, str]
) -> dict[str, Any]:
    """config.json in timm's pretrained-config shape, for `timm.create_model("local-dir:DIR")`.

    `num_classes: 0`: the folder holds the backbone alone, so timm builds the model without
    a classifier and loads every key strictly. `card`: a few words for the `tempo` entry.
    """
    input_size = json.loads(metadata["input_size"])
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": feature_dim,
        "global_pool": "avg",
        "model_args": {"num_classes": 0, "in_chans": 3, "global_pool": "avg"},
        "pretrained_cfg": {
            "custom_load": False,
            "input_size": input_size,
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": json.loads(metadata["mean"]),
            "std": json.loads(metadata["std"]),
            "num_classes": 0,
            "pool_size": [max(1, input_size[1] // 32), max(1, input_size[2] // 32)],
            "first_conv": "conv1",
            "classifier": "fc",
        },
        "tempo": card,
    }
