"""Pre-training's place in the resumable state (training.state): the position, resume rules.

The pair sampling of an epoch is a pure function of (seed, epoch) (data.pairs.epoch_pairs),
so the sampling position is just (epoch, batch): resuming regenerates that epoch's pairs
and skips the batches already trained on; `--augment` draws from a generator seeded by
(seed, epoch, batch, rank) (pretrain.augment), so it needs no saved state either. Together
with the optimiser (and grad scaler) state, the RNG states and the running loss sum of the
unfinished epoch, a resumed run reproduces the uninterrupted one exactly (on CPU).

`last.pt` is a product checkpoint (backbone + head, readable by `load_model`) whose
`training_state` is the envelope of kind "tempo-pretrain"; its payload holds `run_dir`,
`world_size` and `monitor_best` (`--keep best`'s best epoch so far; the monitor records
themselves are in the position's epoch records and `monitor`). Files of version 1
(before the shared envelope) still resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tempo_cli.report.progress import log
from tempo_cli.settings.pretrain import RUNTIME_FIELDS, PretrainSettings
from tempo_cli.training.resume import merge_resumed_settings
from tempo_cli.training.state import TrainingState, load_state

KIND = "tempo-pretrain"
_HINT = "give runs/<name>/last.pt, or start from its weights with --init PATH"


@dataclass
class Position:
    """Where training stands: `epoch` (0-based, in progress) and the next `batch` in it."""

    epoch: int = 0
    batch: int = 0
    step: int = 0  # optimiser steps taken in all
    epoch_loss_sum: float = 0.0  # sum of the step losses of the unfinished epoch
    epoch_steps: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)  # finished epochs' records
    monitor: list[dict[str, Any]] = field(default_factory=list)  # --monitor-every records

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_steps": self.epoch_steps,
            "epochs": [dict(e) for e in self.epochs],
            "monitor": [dict(m) for m in self.monitor],
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
            monitor=[dict(m) for m in d.get("monitor", [])],
        )


def load_resume(path: str | Path) -> TrainingState:
    """The training state of a `--resume` file (one-line TempoError when it holds none)."""
    return load_state(path, KIND, hint=_HINT)


def resumed_settings(settings: PretrainSettings, state: TrainingState) -> PretrainSettings:
    """The saved settings, except options given now and run-time options.

    Files written before `--loss-std` existed were trained with the biased std, and so
    continue with it.
    """
    saved = {"loss_std": "biased", **state.settings}
    return merge_resumed_settings(settings, saved, RUNTIME_FIELDS)


def restore_training(
    st: TrainingState | None,
    s: PretrainSettings,
    opt: torch.optim.Optimizer,
    scaler: Any,
    world_size: int,
    quiet: bool,
) -> Position:
    """The optimiser, scaler and RNG of `--resume` (options given now win) -> position
    (a fresh Position without `st`)."""
    if st is None:
        return Position()
    same_optimizer = st.settings.get("optimizer") == s.optimizer
    if not same_optimizer:
        log(f"--optimizer changed to {s.optimizer}: its state starts afresh", quiet)
    fused = [group.get("fused") for group in opt.param_groups]  # as constructed here
    st.restore(optimizer=opt if same_optimizer else None, scaler=scaler)
    # load_state_dict brings back the saved hyper-parameters; options given now
    # (e.g. a lower --lr to continue) take precedence, and so does the implementation
    # chosen for this device (a run may resume on another device).
    for group, was in zip(opt.param_groups, fused, strict=True):
        group["lr"], group["weight_decay"] = s.lr, s.weight_decay
        if "fused" in group:
            group["fused"] = was
        if s.optimizer == "sgd":
            group["momentum"] = s.momentum
    pos = Position.from_dict(st.position)
    if int(st.payload.get("world_size", 1)) != world_size and pos.batch > 0:
        log(
            "resuming with a different number of processes: the unfinished epoch "
            f"{pos.epoch + 1} restarts from its beginning",
            quiet,
        )
        pos.batch, pos.epoch_loss_sum, pos.epoch_steps = 0, 0.0, 0
    return pos
