"""Reading checkpoint files: telling a file's kind, and the state dicts tempo did not write.

`read_checkpoint_file` opens a file as a torch file (`weights_only=True`) or a detectron2
pickle (restricted unpickler), whatever its suffix, and turns every failure into one
TempoError line naming the file and why (empty, truncated, foreign, unsafe).

`split_state` sorts a flat state dict into torchvision-keyed ResNet backbone weights, an
optional projection head and an optional linear head (`CheckpointParts`):
- reference format: a module with `backbone = nn.Sequential(*list(resnet.children())[:-1])`
  (`backbone.0.*` conv1, `backbone.1.*` bn1, `backbone.4..7.*` layer1..4) and
  `linear = nn.Linear(d, 24)`; also a torchvision ResNet under `backbone.` (both "reference");
- plain torchvision ResNet state dicts, with or without `fc` (1000 outputs = the ImageNet
  classifier, ignored; another size = a linear head);
- detectron2 keys (`stem.*`, `res2..5.*`, optionally under `backbone.bottom_up.`).
A projection head is looked for under `projection_head.`, `projector.`, `head.` or `proj.`,
with or without lightly's `layers.` level (`find_projection_head`) — a guess: the
reference's saved files hold no head. `unwrap` peels `{"state_dict": ...}`, `{"model": ...}`
wrappers; `strip_wrappers` the `module.` / `_orig_mod.` prefixes of DDP and torch.compile.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tempo_cli.errors import TempoError
from tempo_cli.models.detectron2_format import from_detectron2, load_detectron2_state
from tempo_cli.models.safetensors_format import SUFFIX, looks_like_safetensors, read_safetensors

# Reference `nn.Sequential(*list(resnet.children())[:-1])` index -> torchvision name.
_SEQ_TO_TV = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
HEAD_PREFIXES = ("projection_head.", "projector.", "head.", "proj.")
# The keys of a ProjectionHead (an nn.Sequential: Linear, BN, ReLU, Linear, BN, ReLU, Linear).
_HEAD_KEYS = {
    "0.weight",
    "3.weight",
    "6.weight",
    "6.bias",
    *(f"{i}.{n}" for i in (1, 4) for n in ("weight", "bias", "running_mean", "running_var")),
}


@dataclass
class CheckpointParts:
    """A checkpoint's weights sorted by role, before any module is built.

    `backbone`: torchvision-keyed ResNet weights; `head`: ProjectionHead keys `0.weight` ...
    `6.bias`; `linear`: {"weight": (C, d), "bias": (C,)}. The other fields are only
    recorded by the product format.
    """

    fmt: str
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    linear: dict[str, torch.Tensor] | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    image_size: int | None = None


def strip_wrappers(key: str) -> str:
    """`module.` (DDP) and `_orig_mod.` (torch.compile) prefixes removed from a state key."""
    for p in ("module.", "_orig_mod."):
        while key.startswith(p):
            key = key[len(p) :]
    return key


def _sub(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# --- telling a file's kind ---------------------------------------------------------------


def read_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> tuple[Any, str]:
    """Load `path` as safetensors, a torch file (weights_only) or detectron2 pickle.

    Returns (object, kind): kind "safetensors" (a SafetensorsFile: a `.safetensors` name,
    or safetensors bytes under any name; never unpickled), "torch" or "detectron2". Raises
    TempoError naming the file when it is unreadable, empty, truncated, foreign or holds
    Python objects other than weights.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise TempoError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not magic:
        raise TempoError(f"checkpoint {path} is empty; download or save it again")
    if path.suffix.lower() == SUFFIX or looks_like_safetensors(path):
        return read_safetensors(path), "safetensors"
    is_zip = magic.startswith(b"PK")  # torch >= 1.6 files are zip archives
    if path.suffix.lower() == ".pkl" and not is_zip:
        return load_detectron2_state(path), "detectron2"
    try:
        with warnings.catch_warnings():
            # foreign pickles make torch warn about their protocol; our error line says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True), "torch"
    except Exception as e:  # torch raises many kinds for bad files
        torch_error = e
    if not is_zip:
        # A pickle that is not a torch file: maybe a detectron2 .pkl with another suffix.
        try:
            return load_detectron2_state(path), "detectron2"
        except TempoError:
            pass
    raise TempoError(
        f"cannot load checkpoint {path}: {_why_unloadable(path, is_zip, torch_error)}; "
        "download or save it again, or give another --path"
    )


def _why_unloadable(path: Path, is_zip: bool, torch_error: Exception) -> str:
    """Say in a few words why torch.load refused `path`."""
    if is_zip and not zipfile.is_zipfile(path):
        return "truncated or corrupt"
    text = str(torch_error)
    if "Unsupported operand" in text or "invalid load key" in text:
        return "not a PyTorch checkpoint or detectron2 .pkl (foreign or corrupt file)"
    if "Weights only load failed" in text:
        return "it holds Python objects that are not plain weights (refused for safety)"
    return f"not a PyTorch checkpoint ({type(torch_error).__name__})"


def unwrap(obj: Any) -> Any:
    """Peel up to three {"state_dict": ...} / {"model_state_dict": ...} / {"model": ...}."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = [
            obj[k]
            for k in ("state_dict", "model_state_dict", "model")
            if isinstance(obj.get(k), dict)
        ]
        if not inner:
            break
        obj = inner[0]
    return obj


# --- sorting a state dict ----------------------------------------------------------------


def find_projection_head(state: dict[str, Any]) -> dict[str, Any] | None:
    """The ProjectionHead weights under one of HEAD_PREFIXES, or None.

    The head's keys sit right under the prefix (`projector.0.weight`) or one `layers.`
    level lower, as lightly's heads keep them (`projection_head.layers.0.weight`).
    Only an exact set of head keys counts (BN `num_batches_tracked` optional).
    """
    for prefix in HEAD_PREFIXES:
        under = _sub(state, prefix)
        for head in (under, _sub(under, "layers.")):
            if head and _is_head(head):
                return head
    return None


def _is_head(state: dict[str, Any]) -> bool:
    """True when `state` has exactly the keys of a ProjectionHead."""
    return {k for k in state if not k.endswith("num_batches_tracked")} == _HEAD_KEYS


def parse_foreign(obj: Any, path: Path) -> CheckpointParts:
    """Sort what `read_checkpoint_file` gave (not the product format) into parts."""
    obj = unwrap(obj)
    if not isinstance(obj, dict):
        raise TempoError(
            f"cannot load checkpoint {path}: it holds a {type(obj).__name__}, not weights"
        )
    return split_state(obj, path)


def split_state(state: dict[str, Any], path: Path) -> CheckpointParts:
    """Sort a flat state dict (reference / torchvision / detectron2 keys) into parts."""
    if not state or not all(isinstance(k, str) for k in state):
        raise TempoError(f"cannot load checkpoint {path}: no named weights inside")
    state = {strip_wrappers(k): v for k, v in state.items()}
    if not all(isinstance(v, (torch.Tensor, np.ndarray)) for v in state.values()):
        raise TempoError(f"cannot load checkpoint {path}: not a state dict of tensors")
    keys = set(state)
    if any(k.startswith("backbone.0.") for k in keys) or "backbone.conv1.weight" in keys:
        return _reference_parts(state, path)
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        parts = CheckpointParts(
            "torchvision", {k: v for k, v in state.items() if not k.startswith("fc.")}
        )
        fc = _sub(state, "fc.")
        if "weight" in fc and fc["weight"].shape[0] != 1000:  # 1000: ImageNet's classifier
            parts.linear = fc
        return parts
    if any(k.startswith(("stem.", "res2.", "backbone.bottom_up.stem.")) for k in keys):
        parts = split_state(from_detectron2(state), path)
        parts.fmt = "detectron2"
        return parts
    raise TempoError(
        f"cannot load checkpoint {path}: not a ResNet checkpoint tempo knows "
        "(product, reference, torchvision or detectron2 format)"
    )


def _reference_parts(state: dict[str, Any], path: Path) -> CheckpointParts:
    """A module with `backbone` (reference nn.Sequential or torchvision ResNet) and `linear`."""
    backbone = _sub(state, "backbone.")
    if any(k.startswith("0.") for k in backbone):  # nn.Sequential(*children()[:-1]): renumbered
        renamed: dict[str, Any] = {}
        for k, v in backbone.items():
            idx, rest = k.split(".", 1)
            if idx not in _SEQ_TO_TV:
                raise TempoError(f"cannot load checkpoint {path}: unexpected key backbone.{k}")
            renamed[f"{_SEQ_TO_TV[idx]}.{rest}"] = v
        backbone = renamed
    return CheckpointParts(
        "reference",
        backbone,
        head=find_projection_head(state),
        linear=_sub(state, "linear.") or None,
    )
