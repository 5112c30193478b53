"""Checkpoints: the product format, and one loader for every format tempo meets.

Product format (`save_checkpoint`, one `torch.save` file, loadable with weights_only=True):

    {"format": "tempo-checkpoint", "version": 1,
     "arch": "resnet34",
     "backbone": torchvision ResNet state dict without fc (conv1.weight, bn1.*, layer1..4.*),
     "head": ProjectionHead state dict (0.weight ... 6.bias) or None,
     "linear": {"weight": (C, d), "bias": (C,)} or None,
     "class_names": [str] * C or None,
     "meta": JSON-like dict (settings, epoch, step, ...),
     "training_state": dict (optimiser state, RNG state, ...) or None}

`load_model(spec)` also reads:
- reference format: state dict of a module with `backbone = nn.Sequential(*list(resnet
  .children())[:-1])` (`backbone.0.*` conv1, `backbone.1.*` bn1, `backbone.4..7.*`
  layer1..4) and `linear = nn.Linear(d, 24)`; optionally a projection head under
  `projection_head.*`, `projector.*`, `head.*` or `proj.*` (with or without lightly's
  `layers.` level) — a guess: the reference's saved files hold no head;
- plain torchvision ResNet state dicts, with or without `fc` (1000 outputs = the ImageNet
  classifier, ignored; another size = a linear head);
- detectron2 `.pkl` (restricted unpickler, inverse key mapping) and detectron2-keyed
  weights inside a torch file;
- the common wrappers `{"state_dict": ...}`, `{"model": ...}` and the `module.` /
  `_orig_mod.` prefixes of DDP and torch.compile.
The architecture is inferred from the weights; the `arch` argument only matters for the
"random" and "imagenet" specs.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tempo_cli import atomic, places
from tempo_cli.data import ASL_LETTERS
from tempo_cli.errors import TempoError
from tempo_cli.models.backbones import (
    ARCHS,
    FEATURE_DIM,
    arch_from_state,
    build_resnet,
    check_arch,
    imagenet_state_dict,
    imagenet_weight_path,
)
from tempo_cli.models.classifier import Classifier
from tempo_cli.models.detectron2_format import from_detectron2, load_detectron2_state
from tempo_cli.models.projection_head import ProjectionHead

FORMAT = "tempo-checkpoint"
VERSION = 1
BASELINES = ("random", "imagenet")
DEFAULT_ARCH = "resnet34"

# Reference `nn.Sequential(*list(resnet.children())[:-1])` index -> torchvision name.
_SEQ_TO_TV = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_HEAD_PREFIXES = ("projection_head.", "projector.", "head.", "proj.")
_HEAD_KEYS = {
    "0.weight",
    "3.weight",
    "6.weight",
    "6.bias",
    *(f"{i}.{n}" for i in (1, 4) for n in ("weight", "bias", "running_mean", "running_var")),
}


def _is_head(state: dict[str, Any]) -> bool:
    """True when `state` has exactly the keys of a ProjectionHead."""
    return {k for k in state if not k.endswith("num_batches_tracked")} == _HEAD_KEYS


@dataclass
class LoadedModel:
    """A loaded checkpoint. `backbone`: ResNet with fc = Identity, (N,3,H,W) -> (N,d)."""

    arch: str
    backbone: nn.Module
    feature_dim: int
    head: ProjectionHead | None = None
    linear: nn.Linear | None = None
    class_names: list[str] | None = None
    source_format: str = "product"  # product|reference|torchvision|detectron2|random|imagenet
    meta: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    path: Path | None = None
    name: str = ""

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
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        k = _strip_wrappers(k)
        out[k] = v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
    return out


def _strip_wrappers(k: str) -> str:
    for p in ("module.", "_orig_mod."):
        while k.startswith(p):
            k = k[len(p) :]
    return k


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
    meta: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the product format to `path` atomically and return the path.

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
        "meta": _jsonable(meta or {}),
        "training_state": training_state,
    }
    atomic.torch_save(obj, path)
    return Path(path)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _py_state_to_lists(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_lists(s: tuple) -> list:
    return [s[0], list(s[1]), s[2]]


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- reading files -----------------------------------------------------------------------


def resolve_spec(spec: str | Path) -> Path:
    """`--path` value -> an existing file (the path, else a name in the model dir)."""
    p = places.resolve_checkpoint(spec)
    if not p.is_file():
        where = f"{Path(spec).expanduser()} or {places.model_dir() / str(spec)}"
        raise TempoError(
            f"checkpoint {spec!s} not found (looked at {where}); give an existing file, "
            "random, imagenet, or run `tempo download models`"
        )
    return p


def _read_file(path: Path, map_location: str | torch.device = "cpu") -> tuple[Any, str]:
    """Load `path` as a torch file (weights_only) or detectron2 pickle -> (object, kind)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise TempoError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not head:
        raise TempoError(f"checkpoint {path} is empty; download or save it again")
    is_zip = head.startswith(b"PK")
    if path.suffix.lower() == ".pkl" and not is_zip:
        return load_detectron2_state(path), "detectron2"
    try:
        with warnings.catch_warnings():
            # foreign pickles make torch warn about their protocol; our error line says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True), "torch"
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        torch_error = e
    if not is_zip:
        # A pickle that is not a torch file: maybe a detectron2 .pkl with another suffix.
        try:
            return load_detectron2_state(path), "detectron2"
        except TempoError:
            pass
    if is_zip and not zipfile.is_zipfile(path):
        why = "truncated or corrupt"
    elif "Unsupported operand" in str(torch_error) or "invalid load key" in str(torch_error):
        why = "not a PyTorch checkpoint or detectron2 .pkl (foreign or corrupt file)"
    elif "Weights only load failed" in str(torch_error):
        why = "it holds Python objects that are not plain weights (refused for safety)"
    else:
        why = f"not a PyTorch checkpoint ({type(torch_error).__name__})"
    raise TempoError(
        f"cannot load checkpoint {path}: {why}; download or save it again, or give another --path"
    )


def _unwrap(obj: Any) -> Any:
    """Peel {"state_dict": ...} / {"model": ...} wrappers of tensors."""
    for _ in range(3):
        if isinstance(obj, dict) and obj.get("format") != FORMAT:
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    return obj


def _linear_from_state(state: dict[str, torch.Tensor]) -> nn.Linear:
    """nn.Linear(d, C) from {"weight": (C, d), "bias": (C,)} (bias optional)."""
    w = state["weight"]
    lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in state)
    lin.load_state_dict({k: state[k] for k in ("weight", "bias") if k in state})
    return lin


def _default_class_names(n: int) -> list[str] | None:
    return list(ASL_LETTERS) if n == len(ASL_LETTERS) else None


@dataclass
class _Parsed:
    fmt: str
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    linear: dict[str, torch.Tensor] | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None


def _sub(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _parse_state(state: dict[str, Any], path: Path) -> _Parsed:
    """Classify a flat state dict (reference / torchvision / detectron2 keys)."""
    if not state or not all(isinstance(k, str) for k in state):
        raise TempoError(f"cannot load checkpoint {path}: no named weights inside")
    state = {_strip_wrappers(k): v for k, v in state.items()}
    if not all(isinstance(v, (torch.Tensor, np.ndarray)) for v in state.values()):
        raise TempoError(f"cannot load checkpoint {path}: not a state dict of tensors")
    keys = set(state)
    # Reference: backbone = nn.Sequential(*children()[:-1]) and linear.
    if any(k.startswith("backbone.0.") for k in keys):
        bb: dict[str, torch.Tensor] = {}
        for k, v in _sub(state, "backbone.").items():
            idx, rest = k.split(".", 1)
            if idx not in _SEQ_TO_TV:
                raise TempoError(f"cannot load checkpoint {path}: unexpected key backbone.{k}")
            bb[f"{_SEQ_TO_TV[idx]}.{rest}"] = v
        parsed = _Parsed("reference", bb)
        if "linear.weight" in keys:
            parsed.linear = _sub(state, "linear.")
        for prefix in _HEAD_PREFIXES:
            head = _sub(state, prefix)
            if head and all(k.startswith("layers.") for k in head):
                head = _sub(head, "layers.")
            if head and _is_head(head):
                parsed.head = head
                break
        return parsed
    # Product-like: backbone is a torchvision ResNet under `backbone.`.
    if "backbone.conv1.weight" in keys:
        parsed = _Parsed("reference", _sub(state, "backbone."))
        parsed.linear = _sub(state, "linear.") or None
        for prefix in _HEAD_PREFIXES:
            head = _sub(state, prefix)
            head = _sub(head, "layers.") if head and "layers.0.weight" in head else head
            if head and _is_head(head):
                parsed.head = head
                break
        return parsed
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        bb = {k: v for k, v in state.items() if not k.startswith("fc.")}
        parsed = _Parsed("torchvision", bb)
        fc = _sub(state, "fc.")
        if "weight" in fc and fc["weight"].shape[0] != 1000:
            parsed.linear = fc
        return parsed
    if any(k.startswith(("stem.", "res2.", "backbone.bottom_up.stem.")) for k in keys):
        tv = from_detectron2(state)
        parsed = _parse_state(tv, path)
        parsed.fmt = "detectron2"
        return parsed
    raise TempoError(
        f"cannot load checkpoint {path}: not a ResNet checkpoint tempo knows "
        "(product, reference, torchvision or detectron2 format)"
    )


def _parse(obj: Any, path: Path) -> _Parsed:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _Parsed(
            "product",
            obj["backbone"],
            obj.get("head"),
            obj.get("linear"),
            obj.get("class_names"),
            dict(obj.get("meta") or {}),
            obj.get("training_state"),
        )
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise TempoError(
            f"cannot load checkpoint {path}: it holds a {type(obj).__name__}, not weights"
        )
    return _parse_state(obj, path)


def _build(parsed: _Parsed, path: Path, name: str) -> LoadedModel:
    bb_state = {
        k: torch.as_tensor(v) for k, v in parsed.backbone.items() if not k.startswith("fc.")
    }
    try:
        arch = arch_from_state(bb_state)
        backbone, missing, unexpected = _materialize(lambda: build_resnet(arch), bb_state)
    except (TempoError, RuntimeError) as e:
        raise TempoError(f"cannot load checkpoint {path}: {str(e).splitlines()[0]}") from None
    if missing or unexpected:
        raise TempoError(
            f"cannot load checkpoint {path}: backbone weights do not fit {arch} "
            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})"
        )
    head = None
    if parsed.head:
        try:
            hidden, in_dim = parsed.head["0.weight"].shape
            out_dim = parsed.head["6.weight"].shape[0]
            head, _, _ = _materialize(
                lambda: ProjectionHead(int(in_dim), int(hidden), int(out_dim)),
                {k: torch.as_tensor(v) for k, v in parsed.head.items()},
            )
        except (KeyError, RuntimeError, ValueError) as e:
            raise TempoError(f"cannot load checkpoint {path}: bad projection head ({e})") from None
    linear = None
    class_names = parsed.class_names
    if parsed.linear:
        try:
            linear = _linear_from_state(parsed.linear)
        except (KeyError, RuntimeError, IndexError) as e:
            raise TempoError(f"cannot load checkpoint {path}: bad linear head ({e})") from None
        if linear.in_features != FEATURE_DIM[arch]:
            raise TempoError(
                f"cannot load checkpoint {path}: linear head takes {linear.in_features} "
                f"features, {arch} gives {FEATURE_DIM[arch]}"
            )
        if class_names is None:
            class_names = _default_class_names(linear.out_features)
    return LoadedModel(
        arch=arch,
        backbone=backbone,
        feature_dim=FEATURE_DIM[arch],
        head=head,
        linear=linear,
        class_names=class_names,
        source_format=parsed.fmt,
        meta=parsed.meta,
        training_state=parsed.training_state,
        path=path,
        name=name,
    )


def _materialize(
    build: Callable[[], nn.Module], state: dict[str, torch.Tensor]
) -> tuple[nn.Module, list[str], list[str]]:
    """Build on the meta device and take the loaded tensors (no wasted random init).

    Floating tensors are cast to float32; a missing BatchNorm `num_batches_tracked`
    becomes 0. Returns (module, missing keys, unexpected keys).
    """
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    unexpected = [k for k in state if k not in expected]
    state = {
        k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in expected
    }
    for k in expected:
        if k not in state and k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in state]
    bad = [k for k in state if state[k].shape != expected[k].shape]
    if missing or bad:
        shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in bad[:2]]
        raise RuntimeError(f"weights do not fit (missing {missing[:3]}, shapes {shapes})")
    module.load_state_dict(state, strict=True, assign=True)
    return module, missing, unexpected


def load_model(
    spec: str | Path, arch: str | None = None, map_location: str | torch.device = "cpu"
) -> LoadedModel:
    """Load `spec` ("random", "imagenet", a file, or a name in the model dir).

    `arch` is needed for "random"/"imagenet" (default resnet34) and ignored for files,
    whose architecture is inferred from the weights. Modules are returned on CPU in
    train mode (callers move them); `training_state` tensors go to `map_location`.
    Raises TempoError naming the file when it is missing, truncated or foreign.
    """
    s = str(spec)
    if s in BASELINES and not Path(s).exists():
        a = check_arch(arch or DEFAULT_ARCH)
        return LoadedModel(
            arch=a,
            backbone=build_resnet(a, s),
            feature_dim=FEATURE_DIM[a],
            source_format=s,
            name=s,
        )
    path = resolve_spec(spec)
    obj, kind = _read_file(path, map_location)
    parsed = _parse(obj, path)
    if kind == "detectron2":
        parsed.fmt = "detectron2"
    return _build(parsed, path, path.stem)


def load_resnet_state(
    spec: str | Path, arch: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """(arch, torchvision-keyed ResNet state dict without fc) for any spec load_model takes.

    "imagenet" returns the torchvision weights, "random" a freshly initialised ResNet.
    """
    s = str(spec)
    if s == "imagenet" and not Path(s).exists():
        a = check_arch(arch or DEFAULT_ARCH)
        return a, {k: v for k, v in imagenet_state_dict(a).items() if not k.startswith("fc.")}
    m = load_model(spec, arch)
    return m.arch, {k: v.detach().clone() for k, v in m.backbone.state_dict().items()}


# --- content ids -------------------------------------------------------------------------

_ID_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _ID_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _ID_CACHE[key] = h.hexdigest()
    return _ID_CACHE[key]


def checkpoint_id(spec: str | Path, arch: str | None = None) -> str:
    """A short content id for caches: the sha256 of the file (first 16 hex digits).

    "imagenet" -> `imagenet-<arch>-<weight file name>`; "random" ->
    `random-<arch>-seed<torch.initial_seed()>` (random weights depend on the seed).
    """
    s = str(spec)
    if s in BASELINES and not Path(s).exists():
        a = check_arch(arch or DEFAULT_ARCH)
        if s == "imagenet":
            return f"imagenet-{a}-{imagenet_weight_path(a).stem}"
        return f"random-{a}-seed{torch.initial_seed()}"
    return _file_sha256(resolve_spec(spec))[:16]


__all__ = [
    "ARCHS",
    "ASL_LETTERS",
    "LoadedModel",
    "capture_rng_state",
    "checkpoint_id",
    "load_model",
    "load_resnet_state",
    "restore_rng_state",
    "save_checkpoint",
]
