"""Content ids of checkpoints, the keys of the feature caches.

A file's id is its sha256, read once per process and file version: the memo is keyed by
(resolved path, size, mtime), so a file saved again gets a new id while an evaluation
that asks many times reads the file once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tempo_cli import places
from tempo_cli.models.backbones import check_arch, imagenet_weight_path
from tempo_cli.models.checkpoint import DEFAULT_ARCH, resolve_spec
from tempo_cli.models.safetensors_format import folder_weights

_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of `path` (memoised per path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA256_MEMO[key] = h.hexdigest()
    return _SHA256_MEMO[key]


def checkpoint_id(spec: str | Path, arch: str | None = None) -> str:
    """A short content id for caches: the sha256 of the file (first 16 hex digits).

    "imagenet" -> `imagenet-<arch>-<weight file name>`; "random" ->
    `random-<arch>-seed<torch.initial_seed()>` (random weights depend on the seed). A model
    folder's id is that of its model.safetensors.
    """
    if places.is_named_baseline(spec):
        a = check_arch(arch or DEFAULT_ARCH)
        if str(spec) == "imagenet":
            return f"imagenet-{a}-{imagenet_weight_path(a).stem}"
        return f"random-{a}-seed{torch.initial_seed()}"
    path = resolve_spec(spec)
    if path.is_dir():  # a model folder: its weights (config.json and the card say no more)
        path = folder_weights(path)
    return file_sha256(path)[:16]
