"""The one resumable checkpoint envelope of every trainer, and its one save/load pair.

A `last.pt` holds one `TrainingState` as a plain dict (loadable with weights_only=True)::

    {"format": "tempo-training", "version": 2,
     "kind": "tempo-pretrain" | "tempo-segment" | ...,   # which trainer wrote it
     "settings": the run's resolved settings (JSON-like dict; `--resume` restores them),
     "position": where training stands (trainer-defined JSON-like dict),
     "model": state dict or None, "optimizer": state dict or None,
     "scaler": GradScaler state or None,
     "rng": Python/NumPy/torch/CUDA RNG states (runtime.capture_rng_state),
     "payload": whatever else the trainer needs (JSON-like dict, tensors allowed)}

Where it lives in the file: a trainer whose weights are a product model (pre-training:
backbone + projection head) writes a *product checkpoint* (`models.checkpoint`) that
carries this dict as its `training_state`, with `model` None: `tempo eval --path
runs/x/last.pt` and `pretrain --init runs/x/last.pt` read it as any model, and the weights
are stored once. Any other trainer (segment: a whole Mask R-CNN) writes the dict as the
file itself. `load_state` finds it in either place.

Older files: version 1 is the `training_state` of pre-training before this envelope
(`kind` "tempo-pretrain", no `format`; `run_dir`/`world_size` beside the other keys) and
the `tempo-segment` file of segment before it (format "tempo-segment", version 1); both
are read and upgraded here, so their runs still resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import atomic
from tempo_cli.errors import TempoError
from tempo_cli.runtime import capture_rng_state, restore_rng_state
from tempo_cli.settings.base import CommandSettings

FORMAT = "tempo-training"
VERSION = 2
_PRODUCT_FORMAT = "tempo-checkpoint"  # models.checkpoint.FORMAT (not imported: cheap load)


@dataclass
class TrainingState:
    """Everything a resumed run needs; see the module docstring for each field."""

    kind: str
    settings: dict[str, Any]
    position: dict[str, Any]
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    @classmethod
    def capture(
        cls,
        kind: str,
        *,
        settings: CommandSettings | dict[str, Any],
        position: dict[str, Any],
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scaler: torch.amp.GradScaler | None = None,
        payload: dict[str, Any] | None = None,
    ) -> TrainingState:
        """The state now: state dicts of what is given and the RNG of every generator.

        A disabled GradScaler (no float16) is stored as None.
        """
        if isinstance(settings, CommandSettings):
            settings = settings.model_dump(mode="json")
        return cls(
            kind=kind,
            settings=dict(settings),
            position=dict(position),
            model=model.state_dict() if model is not None else None,
            optimizer=optimizer.state_dict() if optimizer is not None else None,
            scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            rng=capture_rng_state(),
            payload=dict(payload or {}),
        )

    def restore(
        self,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Load the saved states into what is given (when saved), then the RNG."""
        if model is not None and self.model is not None:
            model.load_state_dict(self.model)
        if optimizer is not None and self.optimizer is not None:
            optimizer.load_state_dict(self.optimizer)
        if scaler is not None and scaler.is_enabled() and self.scaler:
            scaler.load_state_dict(self.scaler)
        if "python" in self.rng:
            restore_rng_state(self.rng)
        else:  # a segment file of version 1 kept only torch's (and CUDA's) generators
            torch.set_rng_state(self.rng["torch"])
            if "cuda" in self.rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self.rng["cuda"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "kind": self.kind,
            "settings": self.settings,
            "position": self.position,
            "model": self.model,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "rng": self.rng,
            "payload": self.payload,
        }


def save_state(
    path: str | Path, state: TrainingState, *, product: dict[str, Any] | None = None
) -> Path:
    """Write `state` to `path` atomically (a crash leaves the previous file whole).

    `product`: keyword arguments of `models.checkpoint.save_checkpoint` (arch, backbone,
    head, meta, ...): the file is then that product checkpoint with `state` as its
    `training_state`.
    """
    path = Path(path)
    if product is not None:
        from tempo_cli.models.checkpoint import save_checkpoint

        return save_checkpoint(path, **product, training_state=state.to_dict())
    atomic.torch_save(state.to_dict(), path)
    return path


def _command(kind: str) -> str:
    """ "tempo-segment" -> "tempo segment" (as users type it)."""
    return kind.replace("-", " ", 1)


def load_state(path: str | Path, kind: str, *, hint: str) -> TrainingState:
    """The `TrainingState` of kind `kind` in `path` (either place, any version read).

    `hint` ends the error when the file holds no such state (what to give instead).
    Raises TempoError (one line naming the file) when it is missing, unreadable, of
    another kind, or of a newer version.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TempoError(f"--resume {path}: no such file; {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise assorted types
        raise TempoError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    d = _envelope_dict(obj)
    if d is None or d.get("kind") != kind:
        found = f" (it is a `{_command(d['kind'])}` one)" if d and d.get("kind") else ""
        raise TempoError(f"{path} is not a `{_command(kind)}` checkpoint to resume{found}; {hint}")
    version = int(d.get("version", 0))
    if version > VERSION:
        raise TempoError(
            f"{path} holds a training state of version {version}, newer than this tempo "
            f"reads ({VERSION}); upgrade tempo to resume it"
        )
    if version == VERSION and d.get("format") == FORMAT:
        return TrainingState(
            kind=d["kind"],
            settings=dict(d["settings"]),
            position=dict(d["position"]),
            model=d.get("model"),
            optimizer=d.get("optimizer"),
            scaler=d.get("scaler") or None,
            rng=d["rng"],
            payload=dict(d.get("payload") or {}),
            version=version,
        )
    if version == 1:
        return _upgrade_v1(d)
    raise TempoError(
        f"{path} holds a training state of version {version}, which tempo no longer reads"
    )


def _envelope_dict(obj: Any) -> dict[str, Any] | None:
    """The envelope-like dict in a loaded file: the file itself, or a product's state."""
    if not isinstance(obj, dict):
        return None
    if obj.get("format") == _PRODUCT_FORMAT:
        inner = obj.get("training_state")
        return inner if isinstance(inner, dict) else None
    if obj.get("format") == FORMAT:
        return obj
    if obj.get("format") == "tempo-segment":  # segment's own file before version 2
        return {**obj, "kind": "tempo-segment"}
    return None


def _upgrade_v1(d: dict[str, Any]) -> TrainingState:
    """Version 1 files (pre-training's `training_state`, segment's own file) -> version 2."""
    if d["kind"] == "tempo-segment":
        return TrainingState(
            kind="tempo-segment",
            settings={"path": [str(d["backbone"])]},  # v1 saved no settings
            position={"iteration": int(d["iteration"]), "period_loss_sum": 0.0, "period_steps": 0},
            model=d["model"],
            optimizer=d["optimizer"],
            rng=d["rng"],
            payload={
                k: d[k]
                for k in ("model_spec", "category_ids", "backbone", "evals", "train_seconds")
                if k in d
            },
            version=1,
        )
    return TrainingState(
        kind=d["kind"],
        settings=dict(d["settings"]),
        position=dict(d["position"]),
        optimizer=d.get("optimizer"),
        scaler=d.get("scaler") or None,
        rng=d["rng"],
        payload={"run_dir": d.get("run_dir"), "world_size": d.get("world_size", 1)},
        version=1,
    )
