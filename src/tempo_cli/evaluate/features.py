"""Frozen-backbone features of a (train split, test split) pair, and their on-disk cache.

`FeatureSource` computes the features of one model on one dataset root as a
`FeatureRecipe` says (image size, `--bn-stats` mode, seed, BatchNorm batch sizes) and
keeps them under `places.cache_dir()/features/`, written atomically: a second evaluation
of the same checkpoint skips both image decoding and the backbone. The key holds the
checkpoint's content id, the data's source, the split's file list (each file's path,
label, size and mtime: a new `--split-seed` or `--split-fractions` gives a new list, so
never stale features), the image size and what the
BatchNorm mode makes the features depend on (`evaluate/batchnorm.py`): nothing more in
`running` mode, the run's shuffles (seed, run) and batch size in `batch` mode (features
are made anew for every run), both splits and the batch sizes in `adapt` mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tempo_cli import atomic, places
from tempo_cli.evaluate.batchnorm import (
    REFERENCE_TEST_BATCH,
    REFERENCE_TRAIN_BATCH,
    BnBatches,
    BnMode,
    PassContext,
    bn_mode,
    extract_features,
)

if TYPE_CHECKING:
    from tempo_cli.data.labelled import LabelledSplit
    from tempo_cli.data.labelled_data import LabelledData

__all__ = [
    "REFERENCE_TEST_BATCH",
    "REFERENCE_TRAIN_BATCH",
    "FeatureRecipe",
    "FeatureSet",
    "FeatureSource",
    "TEST_SPLIT",
    "compute_split_features",
    "extract_features",
    "split_fingerprint",
]

CACHE_VERSION = 3
#: The test split every protocol scores on.
TEST_SPLIT = "test"


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

    def take(self, index: Tensor | None) -> FeatureSet:
        """The items at `index` (LongTensor (n,)); None: all of them (self)."""
        if index is None:
            return self
        return FeatureSet(
            self.features[index], self.labels[index], self.class_names, self.split, self.cached
        )


@dataclass(frozen=True)
class FeatureRecipe:
    """How features are made (and so part of their cache key).

    image_size: the side images are resized and center-cropped to (None: as stored).
    bn_stats: the `--bn-stats` mode (`evaluate/batchnorm.py` BN_MODES).
    seed: the shuffles of batch and adapt modes (ignored in running mode).
    bn_batches: BatchNorm batch sizes (train, test) of batch and adapt modes.
    """

    image_size: int | None
    bn_stats: str = "running"
    seed: int = 0
    bn_batches: BnBatches = field(
        default_factory=lambda: BnBatches(REFERENCE_TRAIN_BATCH, REFERENCE_TEST_BATCH)
    )

    @property
    def mode(self) -> BnMode:
        return bn_mode(self.bn_stats)


def split_fingerprint(data: Path | LabelledData, split: str) -> str:
    """A cheap content stamp of one split's file list: for each file (in split order) its
    path relative to the data's base folder, label, size and mtime. Covers made splits
    (a tree, a manifest) as well as split folders."""
    from tempo_cli.data.labelled import list_split

    files = list_split(data, split)
    h = hashlib.sha256()
    names = files.class_names
    for p, k in zip(files.paths, files.labels.tolist(), strict=True):
        st = p.stat()
        rel = p.relative_to(files.root) if p.is_relative_to(files.root) else p
        h.update(f"{rel.as_posix()}|{names[k]}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


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
    except Exception:  # a damaged cache entry is recomputed, never fatal
        return None


def _write_cache(path: Path, fs: FeatureSet, model_id: str) -> None:
    # a read-only cache dir must not fail the evaluation
    with contextlib.suppress(OSError):
        atomic.torch_save(
            {
                "features": fs.features,
                "labels": fs.labels,
                "class_names": fs.class_names,
                "model": model_id,
                "split": fs.split,
            },
            path,
        )


class FeatureSource:
    """Frozen features of one model on one dataset root, made as `recipe` says.

    Args:
        model_id: content id of the checkpoint (`models.content_id.checkpoint_id`), or
            None to skip the disk cache (an in-memory model, e.g. during pre-training).
        backbone_fn: zero-argument callable returning the backbone; only called on a
            cache miss, so a warm evaluation never loads the checkpoint.
    Decoded splits, the backbone and every feature set made are kept for the source's
    lifetime (e.g. the test features of a sweep over training splits, in running mode).
    """

    def __init__(
        self,
        model_id: str | None,
        backbone_fn: Callable[[], nn.Module],
        root: str | Path | LabelledData,
        recipe: FeatureRecipe,
        device: torch.device | str = "cpu",
        quiet: bool = True,
    ) -> None:
        self.model_id = model_id
        self.backbone_fn = backbone_fn
        from tempo_cli.data.labelled_data import open_labelled

        self.data = open_labelled(root)  # a path: opened with the default split options
        self.root = self.data.base
        self.recipe = recipe
        self.mode = recipe.mode
        self.device = torch.device(device)
        self.quiet = quiet
        self._backbone: nn.Module | None = None
        self._splits: dict[str, LabelledSplit] = {}
        self._stamps: dict[str, str] = {}
        self._made: dict[str, FeatureSet] = {}

    @property
    def per_run(self) -> bool:
        """Whether every run has features of its own (batch mode)."""
        return self.mode.per_run

    def describe(self) -> dict[str, object]:
        """How the features were made, for metrics.json."""
        return self.mode.describe(self.recipe.bn_batches)

    def pair(self, train_split: str, run: int = 0) -> tuple[FeatureSet, FeatureSet]:
        """Features of `train_split` and of `test` for run `run` (the same for every run
        unless the mode is per-run); from memory or the cache when present."""
        train, test = self.sets(train_split, (TEST_SPLIT,), run)
        return train, test

    def sets(
        self, train_split: str, others: tuple[str, ...] = (TEST_SPLIT,), run: int = 0
    ) -> list[FeatureSet]:
        """Features of `train_split` (training role) and of each of `others` (scored like
        `test`, e.g. `val`), as `pair` makes them: [train, *others]."""
        r = self.recipe
        ctx = PassContext(
            seed=r.seed,
            run=run if self.per_run else 0,
            batches=r.bn_batches,
            splits=(self._stamped(train_split), self._stamped(TEST_SPLIT)),
            device=self.device,
        )
        roles = [("train", train_split)] + [("test", split) for split in others]
        keys = [self._digest(split, self.mode.key(ctx, role)) for role, split in roles]
        cached = [self._lookup(key, split) for key, (_, split) in zip(keys, roles, strict=True)]
        found: list[FeatureSet] = [fs for fs in cached if fs is not None]
        if len(found) < len(cached):
            found = []
            model = self._model()
            if self.mode.needs_pair:
                train, test = self._split(train_split), self._split(TEST_SPLIT)
                model = self.mode.prepare(model, train.images, test.images, ctx)
            for i, (role, split) in enumerate(roles):
                fs = cached[i]
                if fs is None:
                    data = self._split(split)
                    feats = self.mode.extract(model, data.images, role, ctx)
                    fs = FeatureSet(feats, data.labels, list(data.class_names), split)
                    self._store(keys[i], fs)
                found.append(fs)
        return found

    def refresh(self) -> None:
        """Forget the features made (the decoded splits stay): for a model still in
        training (model_id None), whose weights changed since."""
        self._made.clear()

    def _stamped(self, split: str) -> str:
        if split not in self._stamps:
            self._stamps[split] = split_fingerprint(self.data, split)
        return f"{split}@{self._stamps[split]}"

    def _digest(self, split: str, mode_key: dict[str, object]) -> str:
        key = {
            "v": CACHE_VERSION,
            "model": self.model_id,
            "root": str(self.data.source.resolve()),
            "split": self._stamped(split),
            "image_size": self.recipe.image_size,
            **mode_key,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    def _path(self, digest: str) -> Path:
        return places.cache_dir() / "features" / f"{digest}.pt"

    def _lookup(self, digest: str, split: str) -> FeatureSet | None:
        if digest in self._made:
            return self._made[digest]
        if self.model_id is None:
            return None
        hit = _read_cache(self._path(digest), split)
        if hit is not None:
            self._made[digest] = hit
        return hit

    def _store(self, digest: str, fs: FeatureSet) -> None:
        self._made[digest] = fs
        if self.model_id is not None:
            _write_cache(self._path(digest), fs, self.model_id)

    def _model(self) -> nn.Module:
        if self._backbone is None:
            self._backbone = self.backbone_fn()
        return self._backbone

    def _split(self, split: str) -> LabelledSplit:
        if split not in self._splits:
            from tempo_cli.data.labelled import load_split

            self._splits[split] = load_split(
                self.data, split, self.recipe.image_size, quiet=self.quiet
            )
        return self._splits[split]


def compute_split_features(
    backbone: nn.Module,
    root: Path | LabelledData,
    split: str,
    recipe: FeatureRecipe,
    device: torch.device | str = "cpu",
    *,
    run: int = 0,
    quiet: bool = True,
) -> FeatureSet:
    """Decode one split of `root` and compute its features, no cache (running or batch mode:
    a split named `train*` takes the training role, any other the test role)."""
    from tempo_cli.data.labelled import load_split

    mode = recipe.mode
    if mode.needs_pair:
        raise ValueError(f"--bn-stats {mode.name} needs both splits: use FeatureSource.pair")
    data = load_split(root, split, recipe.image_size, quiet=quiet)
    role = "train" if split.startswith("train") else "test"
    ctx = PassContext(recipe.seed, run, recipe.bn_batches, (split, split), torch.device(device))
    feats = mode.extract(backbone, data.images, role, ctx)
    return FeatureSet(feats, data.labels, list(data.class_names), split)
