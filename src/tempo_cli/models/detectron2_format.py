"""detectron2 weight files: SPEC.md's torchvision -> detectron2 key mapping, its inverse,
and a restricted unpickler for `.pkl` files.

Mapping (the reference's conversion, detectron2's `convert-torchvision-to-d2.py`):
keys without `layer` get the prefix `stem.`; `layerN` -> `res{N+1}`; `bnK` -> `convK.norm`;
`downsample.0` -> `shortcut`; `downsample.1` -> `shortcut.norm`; values are numpy arrays;
the file is a pickle of `{"model": {...}, "__author__": "torchvision",
"matching_heuristics": True}`.

Unlike the reference script, `to_detectron2` leaves out `fc.*` (detectron2's ResNet has
no such parameter) and BatchNorm's `num_batches_tracked` (detectron2's FrozenBatchNorm2d
has none); loading back restores `num_batches_tracked` as 0, which changes nothing.

`.pkl` files are pickles, which can run code when loaded. They are only ever read through
`SafeUnpickler`: plain containers, numbers, strings, bytes, None and numpy arrays/dtypes
(with the numpy functions that rebuild them). Any other global -> TempoError; nothing
outside that list is imported or called.
"""

from __future__ import annotations

import codecs
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tempo_cli import atomic
from tempo_cli.errors import TempoError


def _to_d2_key(k: str) -> str:
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    return k


def _from_d2_key(k: str) -> str:
    if k.startswith("stem."):
        k = k[len("stem.") :]
    k = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", k)
    k = k.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    k = re.sub(r"conv(\d)\.norm", r"bn\1", k)
    return k


def to_detectron2(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """torchvision ResNet state dict -> detectron2 ResNet names with numpy values.

    `conv1.weight` -> `stem.conv1.weight`, `bn1.*` -> `stem.conv1.norm.*`,
    `layer1.0.conv1.weight` -> `res2.0.conv1.weight`, `layer1.0.downsample.1.*` ->
    `res2.0.shortcut.norm.*`. `fc.*` and `num_batches_tracked` are left out.
    """
    out: dict[str, np.ndarray] = {}
    for k, v in state.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        out[_to_d2_key(k)] = v.detach().cpu().numpy().copy()
    return out


def from_detectron2(model_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """detectron2 ResNet weights (numpy or tensors) -> torchvision ResNet state dict.

    Accepts the bare backbone names (`stem.*`, `res2.*` ... `res5.*`, as the conversion
    writes them) and the same names under `backbone.bottom_up.` (a trained detectron2
    Mask R-CNN); every other key (FPN, heads) is ignored. Raises TempoError when no
    ResNet key is found.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in model_dict.items():
        if k.startswith("backbone.bottom_up."):
            k = k[len("backbone.bottom_up.") :]
        if not (k.startswith("stem.") or re.match(r"res[2-5]\.", k)):
            continue
        arr = np.asarray(v) if not isinstance(v, torch.Tensor) else v
        t = torch.from_numpy(np.array(arr, copy=True)) if isinstance(arr, np.ndarray) else arr
        out[_from_d2_key(k)] = t.clone()
    if not out:
        raise TempoError("no detectron2 ResNet weights (stem.*, res2.* ... res5.*) found")
    return out


# --- restricted unpickling ---------------------------------------------------------------


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes use it; only latin-1 is allowed."""
    if encoding.lower().replace("_", "-") not in {"latin1", "latin-1", "iso-8859-1"}:
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return codecs.encode(obj, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("numpy.core.multiarray", "dtype")] = np.dtype
    allowed[("numpy._core.multiarray", "dtype")] = np.dtype
    # dtype classes pickled by numpy >= 1.25, e.g. numpy.dtypes.Float32DType
    for name in dir(np.dtypes):
        if name.endswith("DType") and name not in {"ObjectDType", "StringDType"}:
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


_SAFE_GLOBALS: dict[tuple[str, str], Any] | None = None


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only plain-data and numpy-array globals."""

    def find_class(self, module: str, name: str) -> Any:
        global _SAFE_GLOBALS
        if _SAFE_GLOBALS is None:
            _SAFE_GLOBALS = _numpy_globals()
            _SAFE_GLOBALS[("collections", "OrderedDict")] = OrderedDict
            _SAFE_GLOBALS[("_codecs", "encode")] = _latin1_encode
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")


def _check_plain(obj: Any, depth: int = 0) -> None:
    """Reject numpy object arrays and anything not plain data (defence in depth)."""
    if depth > 100:
        raise pickle.UnpicklingError("nesting too deep")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("refused numpy object array")
    elif not (obj is None or isinstance(obj, (str, bytes, int, float, bool, np.generic))):
        raise pickle.UnpicklingError(f"refused object of type {type(obj).__name__}")


def safe_loads(data: bytes) -> Any:
    """Unpickle `data` with SafeUnpickler; raises pickle.UnpicklingError when refused."""
    obj = SafeUnpickler(io.BytesIO(data)).load()
    _check_plain(obj)
    return obj


def load_detectron2_pkl(path: str | Path) -> dict[str, Any]:
    """Read a detectron2 `.pkl` safely: returns the unpickled dict (usually with "model").

    Raises TempoError naming the file when it is refused, truncated or not a dict.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TempoError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        obj = safe_loads(data)
    except pickle.UnpicklingError as e:
        raise TempoError(
            f"refused to load {path}: {e} (a detectron2 .pkl may hold only dicts, lists, "
            "numbers, strings and numpy arrays)"
        ) from None
    except Exception as e:  # truncated/garbled files raise all kinds
        raise TempoError(
            f"cannot read {path}: not a complete pickle ({type(e).__name__}: {e}); "
            "the file may be truncated, download or export it again"
        ) from None
    if not isinstance(obj, dict):
        raise TempoError(f"{path} is not a detectron2 weight file (no dict inside)")
    return obj


def load_detectron2_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A detectron2 `.pkl` -> torchvision-keyed ResNet state dict (TempoError naming it)."""
    obj = load_detectron2_pkl(path)
    model = obj.get("model", obj)
    if not isinstance(model, dict):
        raise TempoError(f"{path} is not a detectron2 weight file ('model' is not a dict)")
    try:
        return from_detectron2(model)
    except TempoError as e:
        raise TempoError(f"{path}: {e}") from None


def detectron2_payload(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The object the reference pickles: {"model": ..., "__author__", "matching_heuristics"}."""
    return {"model": to_detectron2(state), "__author__": "torchvision", "matching_heuristics": True}


def save_detectron2_pkl(path: str | Path, state: Mapping[str, torch.Tensor]) -> Path:
    """Write a torchvision ResNet state dict as a detectron2 `.pkl` (atomic)."""
    data = pickle.dumps(detectron2_payload(state), protocol=4)
    atomic.write_bytes(path, data)
    return Path(path)
