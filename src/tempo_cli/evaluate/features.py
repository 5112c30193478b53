"""Frozen-backbone features of a labelled split, and their on-disk cache.

Features are computed once per (checkpoint content, data root, split content, image size,
BatchNorm statistics) and kept under `places.cache_dir()/features/`, written atomically;
a second evaluation of the same checkpoint skips both image decoding and the backbone.

`bn_stats="running"` (default) runs the backbone in eval mode: each image's feature does
not depend on its batch. `bn_stats="batch"` reproduces the reference quirk (SPEC.md): the
backbone stays in train mode, so BatchNorm normalises with the statistics of each batch —
training images in shuffled batches of 24, test images in order in batches of 10. The
reference draws new training batches for every run; here one seeded shuffle is used for
all runs (features are computed once), so runs differ only in head init and batch order.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tempo_cli import atomic, places
from tempo_cli.errors import TempoError

CACHE_VERSION = 1
#: Batch sizes of the reference's feature pass in `bn_stats="batch"` mode.
REFERENCE_TRAIN_BATCH = 24
REFERENCE_TEST_BATCH = 10


@dataclass
class FeatureSet:
    """Features of one split.

    features: float32 (N, d) on CPU; labels: int64 (N,); class_names: C names (label =
    index); split: the split folder name; cached: True when read from the cache.
    """

    features: Tensor
    labels: Tensor
    class_names: list[str]
    split: str
    cached: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class FeatureRecipe:
    """How a split's features are made (and so part of their cache key).

    image_size: the side images are resized and center-cropped to (None: as stored).
    bn_stats: "running" (backbone in eval mode) or "batch" (train mode, the reference).
    seed: the shuffle of the training batches in batch mode (ignored in running mode).
    """

    image_size: int | None
    bn_stats: str
    seed: int


def _batches(n: int, batch_size: int, order: Tensor | None) -> list[Tensor]:
    """Index blocks of a pass over n items; a trailing block of 1 joins the previous one
    (BatchNorm in train mode cannot normalise a single 1x1 feature map)."""
    idx = torch.arange(n) if order is None else order
    blocks = list(idx.split(batch_size))
    if len(blocks) > 1 and blocks[-1].numel() == 1:
        blocks[-2:] = [torch.cat(blocks[-2:])]
    return blocks


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    bn_stats: str = "running",
    order: Tensor | None = None,
) -> Tensor:
    """Backbone features of uint8 images.

    Args:
        backbone: (N, 3, H, W) float -> (N, d) (or (N, d, 1, 1)); not modified (batch mode
            works on a copy, so the running statistics stay untouched).
        images: uint8 (N, 3, S, S), normalised batch by batch with the ImageNet statistics.
        batch_size: images per forward pass (matters only for bn_stats="batch").
        bn_stats: "running" (eval mode) or "batch" (train mode: per-batch statistics).
        order: optional permutation (N,) giving the batch composition (batch mode).
    Returns:
        float32 (N, d) on CPU, row k = image k (whatever `order`).
    """
    from tempo_cli.data.transforms import normalize_uint8

    device = torch.device(device)
    if bn_stats not in ("running", "batch"):
        raise ValueError(f"bn_stats must be running or batch, not {bn_stats!r}")
    n = images.shape[0]
    was_training = backbone.training
    if bn_stats == "batch":
        model = copy.deepcopy(backbone).to(device).train()
    else:
        model = _inference_copy(backbone.to(device).eval())
    # channels_last: oneDNN's fastest convolution layout on CPU (and tensor cores on GPU)
    model = model.to(memory_format=torch.channels_last)
    out: Tensor | None = None
    try:
        for idx in _batches(n, batch_size, order):
            x = normalize_uint8(images[idx].to(device))
            x = x.contiguous(memory_format=torch.channels_last)
            f = torch.flatten(model(x), 1).float().cpu()
            if out is None:
                out = torch.empty(n, f.shape[1])
            out[idx] = f
    finally:
        if bn_stats == "running":
            backbone.train(was_training)
    if out is None:
        raise TempoError("no images to compute features of")
    return out


def _inference_copy(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy with each BatchNorm folded into its convolution (same function,
    fewer passes over memory); the module itself when it cannot be traced."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(backbone)  # works on a deep copy
    except Exception:  # noqa: BLE001 - any tracing failure: run the module as it is
        return copy.deepcopy(backbone)


def split_fingerprint(root: Path, split: str) -> str:
    """A cheap content stamp of `<root>/<split>`: relative paths, sizes and mtimes."""
    h = hashlib.sha256()
    base = root / split
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def feature_cache_path(model_id: str, root: Path, split: str, recipe: FeatureRecipe) -> Path:
    """Where the features of this combination are cached (the key is hashed)."""
    key = {
        "v": CACHE_VERSION,
        "model": model_id,
        "root": str(Path(root).resolve()),
        "split": split,
        "content": split_fingerprint(Path(root), split),
        "image_size": recipe.image_size,
        "bn_stats": recipe.bn_stats,
        # batch statistics depend on the (seeded) batch composition
        "seed": recipe.seed if recipe.bn_stats == "batch" else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return places.cache_dir() / "features" / f"{digest}.pt"


def _read_cache(path: Path, split: str) -> FeatureSet | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return FeatureSet(
            features=obj["features"].float(),
            labels=obj["labels"].long(),
            class_names=list(obj["class_names"]),
            split=split,
            cached=True,
        )
    except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
        return None


def compute_split_features(
    backbone: nn.Module,
    root: Path,
    split: str,
    recipe: FeatureRecipe,
    device: torch.device | str = "cpu",
    *,
    batch_size: int = 64,
    quiet: bool = True,
) -> FeatureSet:
    """Decode `<root>/<split>` and compute its features (no cache).

    In running mode images go through in batches of `batch_size` (the features do not
    depend on it). In batch mode training splits (name starting with "train") use seeded
    shuffled batches of 24, other splits ordered batches of 10, as the reference's loaders.
    """
    from tempo_cli.data.labelled import load_split

    data = load_split(root, split, recipe.image_size, quiet=quiet)
    order = None
    bn_stats = recipe.bn_stats
    if bn_stats == "batch":
        if split.startswith("train"):
            g = torch.Generator().manual_seed(int(recipe.seed))
            order = torch.randperm(len(data), generator=g)
            bs = REFERENCE_TRAIN_BATCH
        else:
            bs = REFERENCE_TEST_BATCH
    else:
        bs = batch_size
    feats = extract_features(backbone, data.images, bs, device, bn_stats, order)
    return FeatureSet(feats, data.labels, list(data.class_names), split)


def cached_features(
    model_id: str | None,
    backbone_fn: Callable[[], nn.Module],
    root: Path,
    split: str,
    recipe: FeatureRecipe,
    device: torch.device | str = "cpu",
    quiet: bool = True,
) -> FeatureSet:
    """Features of `<root>/<split>`, from the cache when present, else computed and cached.

    Args:
        model_id: content id of the checkpoint (`models.content_id.checkpoint_id`), or None
            to skip the cache (an in-memory model, e.g. during pre-training).
        backbone_fn: zero-argument callable returning the backbone; only called on a cache
            miss, so a warm evaluation never loads the checkpoint.
    Returns:
        FeatureSet with features (N, d) float32 on CPU.
    """
    path = None
    if model_id is not None:
        path = feature_cache_path(model_id, root, split, recipe)
        hit = _read_cache(path, split)
        if hit is not None:
            return hit
    fs = compute_split_features(backbone_fn(), root, split, recipe, device, quiet=quiet)
    if path is not None:
        # a read-only cache dir must not fail the evaluation
        with contextlib.suppress(OSError):
            atomic.torch_save(
                {
                    "features": fs.features,
                    "labels": fs.labels,
                    "class_names": fs.class_names,
                    "model": model_id,
                    "split": split,
                },
                path,
            )
    return fs
