"""How much the monitor does by default: `--monitor-budget` (5% of the pre-training time).

The monitor's cost is sized before training from the dataset alone (a one-epoch run never
gets past a first pass to time one), in forward passes of one image in eval mode:

- one epoch of training costs about TRAIN_COST such passes per pair (two views, forward and
  backward; measured ~7 on a CPU by `benchmarks/monitor_cost.py`, so 6 overstates the
  monitor's share a little), divided by the processes that share the epoch under torchrun
  (rank 0 monitors alone);
- one monitor pass costs 2 passes per label-free pair (anchor and partner) plus one per
  labelled image whose features kNN/linear needs (the training split it draws from, test/,
  val/).

`size_monitor` picks the largest label-free sample (at most MAX_PAIRS, at least MIN_PAIRS)
and the smallest epoch interval whose passes fit the budget over the whole run; the last
epoch is always measured. When not even one pass at the last epoch fits, `--monitor auto`
drops the labelled accuracy (label-free only), then the monitor altogether; an explicit
`--monitor knn|linear`, `--keep best` or `--monitor-pairs N` is the user asking for that
much, measured as sparsely as the budget allows but at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Eval-mode forward passes of one image that one training pair costs (see the module doc).
TRAIN_COST = 6.0
#: The label-free sample when the budget allows it (the signals' previous fixed size).
MAX_PAIRS = 512
#: The smallest label-free sample (RankMe is bounded by the number of samples).
MIN_PAIRS = 64


@dataclass(frozen=True)
class MonitorSize:
    """What the monitor measures: `pairs` label-free pairs, `labelled` (kNN/linear on) or not,
    every `every` epochs and at the last one (`every` 0: never); `share` = the estimated
    fraction of the training time it costs."""

    pairs: int
    labelled: bool
    every: int
    share: float

    def measures(self, epoch: int, epochs: int) -> bool:
        """Whether the end of 1-based `epoch` of `epochs` is measured."""
        return self.every > 0 and (epoch % self.every == 0 or epoch == epochs)

    def describe(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "every_epochs": self.every, "share": round(self.share, 4)}


def passes(epochs: int, every: int) -> int:
    """Measured epoch ends of a run of `epochs` measured every `every` and at the last."""
    return epochs // every + (1 if epochs % every else 0)


def size_monitor(
    *,
    pairs_per_epoch: int,
    epochs: int,
    labelled_images: int,
    budget: float,
    world_size: int = 1,
    pairs: int | None = None,
    insist: bool = False,
) -> MonitorSize:
    """The monitor's size for a run (see the module doc). `labelled_images` 0: label-free
    only; `pairs` given: that sample, not sized; `insist`: never fewer than one pass."""
    per_epoch = budget * TRAIN_COST * pairs_per_epoch / max(world_size, 1)
    total = per_epoch * epochs
    labelled = labelled_images > 0
    fixed, asked = labelled_images, pairs
    if pairs is None:  # the largest sample that lets every epoch be measured, within bounds
        room = (per_epoch - fixed) / 2
        pairs = int(min(MAX_PAIRS, max(MIN_PAIRS, room)))
        pairs = min(pairs, max(pairs_per_epoch, 2))
    cost = 2 * pairs + fixed
    every = next((k for k in range(1, epochs + 1) if passes(epochs, k) * cost <= total), 0)
    if every == 0 and labelled and not insist:  # auto: keep the label-free signals if they fit
        return size_monitor(
            pairs_per_epoch=pairs_per_epoch, epochs=epochs, labelled_images=0, budget=budget,
            world_size=world_size, pairs=asked,
        )  # fmt: skip
    if every == 0 and insist:
        every = epochs  # once, at the last epoch
    if every == 0:
        return MonitorSize(pairs, labelled, 0, 0.0)
    share = passes(epochs, every) * cost / (TRAIN_COST * pairs_per_epoch * epochs / world_size)
    return MonitorSize(pairs, labelled, every, share)


def fraction(value: float) -> str:
    """A share as a percentage for the plan's line."""
    return f"{100 * value:.1f}%"


def interval_words(size: MonitorSize, epochs: int) -> str:
    """'each epoch', 'every 2 epochs and the last', 'the last epoch only', 'never'."""
    if size.every == 0:
        return "never"
    if size.every == 1:
        return "each epoch"
    if size.every >= epochs:
        return "the last epoch only"
    last = "" if epochs % size.every == 0 else " and the last"
    return f"every {size.every} epochs{last}"
