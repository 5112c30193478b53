"""The outcome of one (checkpoint, samples per class) evaluation, and its metrics record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from tempo_cli.evaluate.predictions import Predictions


@dataclass
class CurveResult:
    """Accuracy curves of R runs of one protocol on one split.

    accuracy: (R, S) test accuracy of each run at `steps` (S,) (step 0 = before training).
    linear: the best run's head (linear and semisup); backbone_state: the best run's
    fine-tuned backbone (semisup only; None = the checkpoint's frozen backbone).
    lr: the learning rate of the heads (None: the protocol has none, e.g. knn).
    val_accuracy: (R,) each run's final accuracy on the val split, when the data has one:
    the best run (and the best lr of a grid) were then chosen on it (`selected_on`).
    selected: this is the chosen lr of its grid (always True without a grid).
    predictions: each run's final per-image predictions on test (and val), kept in the
    run folder's predictions.npz (`evaluate/predictions.py`); None: not kept.
    """

    protocol: str
    checkpoint: str
    samples_pc: int | None
    accuracy: Tensor
    steps: Tensor
    best_run: int = 0
    linear: nn.Linear | None = None
    backbone_state: dict[str, Tensor] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    val_accuracy: Tensor | None = None
    selected: bool = True
    predictions: Predictions | None = None

    @property
    def selected_on(self) -> str:
        """The split choices were made on: "val" when it was scored, else "test"."""
        return "test" if self.val_accuracy is None else "val"

    @property
    def val_mean(self) -> float | None:
        """Mean final val accuracy over runs (None: no val split)."""
        return None if self.val_accuracy is None else float(self.val_accuracy.double().mean())

    @property
    def runs(self) -> int:
        return int(self.accuracy.shape[0])

    @property
    def mean(self) -> Tensor:
        """(S,) mean accuracy over runs."""
        return self.accuracy.mean(dim=0)

    @property
    def std(self) -> Tensor:
        """(S,) standard deviation over runs (population, as the reference's numpy std)."""
        return self.accuracy.std(dim=0, correction=0)

    def record(self) -> dict[str, Any]:
        """The CLI.md `results` entry (plus a few descriptive keys)."""
        final = self.accuracy[:, -1].double()
        out: dict[str, Any] = {
            "checkpoint": self.checkpoint,
            "samples_pc": self.samples_pc,
            "runs": self.runs,
            "accuracy_final_mean": round(float(final.mean()), 6),
            "accuracy_final_std": round(float(final.std(correction=0)), 6),
            "accuracy_best_mean": round(float(self.mean.max()), 6),
            "accuracy_best_run_final": round(float(self.accuracy[self.best_run, -1]), 6),
            "protocol": self.protocol,
            "steps": int(self.steps[-1]),
            "seconds": round(self.seconds, 3),
            **self.extra,
        }
        if self.lr is not None:  # a protocol that trains heads chose a run (and an lr)
            out.update(lr=self.lr, selected=self.selected, selected_on=self.selected_on)
            out["best_run"] = self.best_run
        if self.val_accuracy is not None:
            val = self.val_accuracy.double()
            out["val_accuracy_final_mean"] = round(float(val.mean()), 6)
            out["val_accuracy_final_std"] = round(float(val.std(correction=0)), 6)
        return out


def steps_tensor(iterations: int, every: int = 1) -> Tensor:
    """(S,) 0, every, 2*every, ..., and always the last step."""
    steps = list(range(0, iterations + 1, every))
    if steps[-1] != iterations:
        steps.append(iterations)
    return torch.tensor(steps)
