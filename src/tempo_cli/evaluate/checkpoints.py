"""The `--path` values of one `tempo eval` call: labels, content ids, lazy loading."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from tempo_cli import places

#: File stems that say nothing about the run; the label adds the run folder's name.
GENERIC_STEMS = ("model", "last", "checkpoint", "final", "best")


def checkpoint_label(spec: str) -> str:
    """A short name for tables and plots: the file stem, with its run folder when the stem
    says nothing (`runs/demo/model.pt` -> `demo-model`)."""
    p = Path(spec)
    if p.stem in GENERIC_STEMS and p.parent.name:
        return f"{p.parent.name}-{p.stem}"
    return p.stem


class Checkpoint:
    """One `--path` value, loaded only when needed (a warm linear/knn run never loads it)."""

    def __init__(self, spec: str, arch: str, seed: int) -> None:
        self.spec = spec
        self.arch = arch
        self.seed = seed
        self._model = None
        self._id: str | None = None
        self.is_baseline = places.is_named_baseline(spec)
        self.label = spec if self.is_baseline else checkpoint_label(spec)

    @property
    def id(self) -> str:
        """Content id for the feature cache (random: arch + seed of its initialisation)."""
        if self._id is None:
            from tempo_cli.models.content_id import checkpoint_id

            if self.is_baseline and self.spec == "random":
                self._id = f"random-{self.arch}-seed{self.seed}"
            else:
                self._id = checkpoint_id(self.spec, self.arch)
        return self._id

    def model(self):
        """The LoadedModel (random init drawn from `seed`, so it matches its cache key)."""
        if self._model is None:
            from tempo_cli.models.checkpoint import load_model

            torch.manual_seed(self.seed)
            self._model = load_model(self.spec, self.arch)
        return self._model

    @functools.cached_property
    def recorded_image_size(self) -> int | None:
        """The input side the file records (None: named baselines, foreign formats).

        Read once: the run asks for it when it extracts features and again when it saves."""
        if self.is_baseline:
            return None
        if self._model is None:
            # Memory-mapped, only the record is read: a warm run still loads no weights.
            from tempo_cli.models.checkpoint import FORMAT, resolve_spec
            from tempo_cli.models.safetensors_format import is_safetensors_checkpoint as is_st
            from tempo_cli.models.safetensors_format import recorded_image_size

            if is_st(path := resolve_spec(self.spec)):  # its header: never torch.load'ed
                return recorded_image_size(path)
            try:
                obj = torch.load(path, weights_only=True, mmap=True)
            except Exception:  # not a zip torch file: load_model says why
                return self.model().image_size
            if isinstance(obj, dict) and obj.get("format") == FORMAT:
                size = obj.get("image_size")
                return int(size) if size is not None else None
            return None  # a foreign format records no size
        return self._model.image_size


def unique_labels(checkpoints: list[Checkpoint]) -> None:
    """Suffix repeated labels (`a`, `a-2`, ...) so every row of the table is distinct."""
    seen: dict[str, int] = {}
    for ck in checkpoints:
        n = seen.get(ck.label, 0)
        seen[ck.label] = n + 1
        if n:
            ck.label = f"{ck.label}-{n + 1}"
