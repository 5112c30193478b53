"""The outcome of one (checkpoint, samples per class) evaluation, and its metrics record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class CurveResult:
    """Accuracy curves of R runs of one protocol on one split.

    accuracy: (R, S) test accuracy of each run at `steps` (S,) (step 0 = before training).
    linear: the best run's head (linear and semisup); backbone_state: the best run's
    fine-tuned backbone (semisup only; None = the checkpoint's frozen backbone).
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
        return {
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


def steps_tensor(iterations: int, every: int = 1) -> Tensor:
    """(S,) 0, every, 2*every, ..., and always the last step."""
    steps = list(range(0, iterations + 1, every))
    if steps[-1] != iterations:
        steps.append(iterations)
    return torch.tensor(steps)
