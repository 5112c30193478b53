"""Heatmaps computed once per classifier and images: `tempo explain lrp` and `tempo explain
relevance` (the study's `lrp` and `relevance` stages) explain the same classifier on the
same test images with the same method, so the second reads what the first computed.

Entries live under `places.cache_dir()/heatmaps/<key>.pt`, written atomically. The key holds
everything the numbers depend on: the classifier file's content id, the method, the batch
size and device type (a batch of another size may round differently), the torch version
and the exact pixels (their sha256), so an entry is never stale. A damaged entry is
recomputed; a read-only cache folder only costs the recomputation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from tempo_cli import atomic, places
from tempo_cli.explain.attribution import heatmaps
from tempo_cli.models.classifier import LoadedClassifier

CACHE_VERSION = 1


def heatmap_key(
    model_id: str, pixels: torch.Tensor, method: str, batch_size: int, device: torch.device
) -> str:
    """The cache key of one heatmap computation (hex sha256).

    pixels: [0, 1] images (N, 3, H, W), hashed byte for byte.
    """
    head = {
        "version": CACHE_VERSION,
        "model": model_id,
        "method": method,
        "batch_size": int(batch_size),
        "device": device.type,
        "torch": torch.__version__,
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype),
    }
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    h.update(pixels.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_id(model: LoadedClassifier) -> str | None:
    """The classifier file's content id; None when it is no readable file (no caching)."""
    from tempo_cli.models.content_id import checkpoint_id

    try:
        return checkpoint_id(model.checkpoint)
    except Exception:  # an in-memory or vanished checkpoint: compute, never cache
        return None


def _read(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        maps, preds = obj["maps"].float(), obj["preds"].long()
    except Exception:  # a damaged entry is recomputed, never fatal
        return None
    return (maps, preds) if maps.shape[0] == preds.shape[0] == n else None


def cached_heatmaps(
    model: LoadedClassifier,
    pixels: torch.Tensor,
    method: str,
    batch_size: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attribution.heatmaps` of `model.classifier` (on `device`), from the cache when an
    earlier command computed the same ones.

    Returns heatmaps float32 (N, H, W) and predictions LongTensor (N,), on CPU.
    """
    model_id = _model_id(model)
    path = None
    if model_id is not None:
        key = heatmap_key(model_id, pixels, method, batch_size, device)
        path = places.cache_dir() / "heatmaps" / f"{key}.pt"
        hit = _read(path, pixels.shape[0])
        if hit is not None:
            if on_batch is not None:
                on_batch(pixels.shape[0])
            return hit
    maps, preds = heatmaps(model.classifier, pixels, method, batch_size, device, on_batch)
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only cache must not fail the command
            atomic.torch_save({"maps": maps, "preds": preds, "model": model_id}, path)
    return maps, preds
