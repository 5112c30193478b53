"""Per-step losses: kept on the device, read back every N steps, checked, logged, shown.

Reading a loss back (`.item()`) waits for the device; on a GPU that stall every step costs
more than the step's launch overhead, so the 0-d loss tensors stay where they are and are
read back `every` steps with one `torch.stack(...).tolist()` (one sync). On a CPU reading
is free and `every` is 1. The values are the same either way: float32 -> Python float is
exact however it is read.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from tempo_cli.errors import TempoError
from tempo_cli.report.progress import ProgressBar

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

Scalar = torch.Tensor | float


def readback_every(device: torch.device) -> int:
    """Steps between loss read-backs: 1 on a CPU (free), 10 on an accelerator (one sync)."""
    return 1 if device.type == "cpu" else 10


def nonfinite_error(step: int, hint: str) -> TempoError:
    """The one-line error of a nan/inf loss; `hint` says what is kept and what to do."""
    return TempoError(f"the loss became non-finite (nan/inf) at step {step}; {hint}")


def finite_weights(module: torch.nn.Module) -> bool:
    """True when every parameter is finite (one device sync): checked before saving, so a
    step that blew the weights up never overwrites the last good checkpoint."""
    flags = [p.detach().isfinite().all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


@dataclass
class LoggedStep:
    """One step's values as read back: `loss` and the other named scalars."""

    step: int
    loss: float
    scalars: dict[str, float] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


class StepLogger:
    """Step losses -> finite check, TensorBoard (`tag` and each scalar's name), progress bar.

    `writer` may be None (ranks > 0, or no logging). `done` steps are shown as finished
    when the bar opens (a resumed run). Use as a context manager (it owns the bar).
    """

    def __init__(
        self,
        writer: SummaryWriter | None,
        *,
        total: int | None,
        description: str,
        quiet: bool,
        every: int = 1,
        done: int = 0,
        tag: str = "loss",
    ) -> None:
        self.writer = writer
        self.every = max(1, every)
        self.tag = tag
        self.last = float("nan")  # the latest loss read back, for the progress bar
        self._pending: list[tuple[int, torch.Tensor, dict[str, Scalar]]] = []
        self._bar = ProgressBar(total, description, quiet)
        self._done = done

    def __enter__(self) -> StepLogger:
        self._bar.__enter__()
        if self._done:
            self._bar.advance(self._done)
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    @property
    def pending(self) -> int:
        """Steps added but not read back yet."""
        return len(self._pending)

    def add(self, step: int, loss: torch.Tensor, **scalars: Scalar) -> bool:
        """Keep step `step`'s loss (0-d) and scalars; True when `every` steps are pending."""
        kept = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in scalars.items()}
        self._pending.append((step, loss.detach(), kept))
        return len(self._pending) >= self.every

    def read(self) -> list[LoggedStep]:
        """The pending steps as floats (one device sync), oldest first; clears them."""
        if not self._pending:
            return []
        tensors = [loss for _, loss, _ in self._pending]
        tensors += [
            v for _, _, sc in self._pending for v in sc.values() if isinstance(v, torch.Tensor)
        ]
        dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
        values = iter(torch.stack([t.reshape(()).to(dtype) for t in tensors]).tolist())
        losses = [next(values) for _ in self._pending]
        rows = []
        for (step, _, sc), loss in zip(self._pending, losses, strict=True):
            read = {
                k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in sc.items()
            }
            rows.append(LoggedStep(step, loss, read))
        self._pending.clear()
        return rows

    def write(self, rows: list[LoggedStep]) -> None:
        """Send rows to TensorBoard and remember the last loss for the bar."""
        for r in rows:
            if self.writer is not None:
                self.writer.add_scalar(self.tag, r.loss, r.step)
                for k, v in r.scalars.items():
                    self.writer.add_scalar(k, v, r.step)
        if rows:
            self.last = rows[-1].loss

    def flush(self, hint: str) -> list[LoggedStep]:
        """`read`, raise `nonfinite_error` at the first nan/inf loss, else `write`."""
        rows = self.read()
        bad = next((r for r in rows if not r.finite), None)
        if bad is not None:
            raise nonfinite_error(bad.step, hint)
        self.write(rows)
        return rows

    def advance(self, **fields: object) -> None:
        """Move the progress bar one step, showing the last loss read and `fields`."""
        self._bar.advance(1, loss=self.last, **fields)
