"""Resumable training state: what `last.pt` holds beyond the weights, and resume rules.

The pair sampling of an epoch is a pure function of (seed, epoch) (data.pairs.epoch_pairs),
so the sampling position is just (epoch, batch): resuming regenerates that epoch's pairs
and skips the batches already trained on. Together with the optimiser (and grad scaler)
state, the RNG states and the running loss sum of the unfinished epoch, a resumed run
reproduces the uninterrupted one exactly (on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_cli.errors import TempoError
from tempo_cli.settings.pretrain import RUNTIME_FIELDS, PretrainSettings

STATE_VERSION = 1


@dataclass
class Position:
    """Where training stands: `epoch` (0-based, in progress) and the next `batch` in it."""

    epoch: int = 0
    batch: int = 0
    step: int = 0  # optimiser steps taken in all
    epoch_loss_sum: float = 0.0  # sum of the step losses of the unfinished epoch
    epoch_steps: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)  # finished epochs' records

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_steps": self.epoch_steps,
            "epochs": [dict(e) for e in self.epochs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Position:
        return cls(
            epoch=int(d["epoch"]),
            batch=int(d["batch"]),
            step=int(d["step"]),
            epoch_loss_sum=float(d["epoch_loss_sum"]),
            epoch_steps=int(d["epoch_steps"]),
            epochs=[dict(e) for e in d["epochs"]],
        )


def training_state(
    settings: PretrainSettings,
    position: Position,
    *,
    optimizer: dict[str, Any],
    scaler: dict[str, Any] | None,
    rng: dict[str, Any],
    run_dir: Path,
    world_size: int,
) -> dict[str, Any]:
    """The `training_state` dict stored in last.pt (weights_only-loadable)."""
    return {
        "kind": "tempo-pretrain",
        "version": STATE_VERSION,
        "settings": settings.model_dump(mode="json"),
        "position": position.to_dict(),
        "optimizer": optimizer,
        "scaler": scaler or {},
        "rng": rng,
        "run_dir": str(run_dir),
        "world_size": world_size,
    }


def check_training_state(state: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """The training state of a `--resume` file, or TempoError if it holds none."""
    if not state or state.get("kind") != "tempo-pretrain":
        raise TempoError(
            f"{path} is not a resumable pre-training checkpoint (no training state); give "
            "runs/<name>/last.pt, or start from its weights with --init PATH"
        )
    if int(state.get("version", 0)) > STATE_VERSION:
        raise TempoError(f"{path} was written by a newer tempo; upgrade tempo to resume it")
    return state


def merge_resumed_settings(settings: PretrainSettings, saved: dict[str, Any]) -> PretrainSettings:
    """Settings of a resumed run: the saved ones, except options given now.

    Options given now (command line, TEMPO_*, --config) win, e.g. `--epochs 30` extends a
    run; run-time options (device, workers, quiet, ...) are never taken from the file.
    """
    update = {
        k: v
        for k, v in saved.items()
        if k in PretrainSettings.model_fields
        and k not in settings.model_fields_set
        and k not in RUNTIME_FIELDS
    }
    # model_copy skips validation on purpose: e.g. the original --init file may be gone.
    merged = settings.model_copy(update=update)
    merged.__pydantic_fields_set__ = set(settings.model_fields_set)
    return merged
