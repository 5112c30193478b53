"""Pair batches: gather uint8 frames by index, optionally ahead of time, normalise on device.

The FrameStore holds every frame once as uint8 (N, 3, S, S). A batch is two index
gathers (anchors, partners) -> two uint8 (B, 3, S, S) tensors, prepared by background
threads (`workers`) while the model trains on the previous batch, pinned when the
target is a GPU. Normalisation (ToTensor + Normalize of the reference: /255, -mean,
/std) runs in batch on the training device: no per-sample PIL work at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from tempo_cli.data.pairs import epoch_pairs
from tempo_cli.data.sequences import FrameStore
from tempo_cli.data.transforms import normalize
from tempo_cli.settings.pretrain import PretrainSettings

IndexBatch = tuple[torch.Tensor, torch.Tensor]
Uint8Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class PairSampler:
    """The pairs of every epoch for one process: `data.pairs.epoch_pairs` of the settings'
    `--pdf`, `--proximity`, `--seed` and `--pairs` (a pure function of the epoch)."""

    store: FrameStore
    pdf: str
    param: float
    seed: int
    pairs: str
    rank: int = 0
    world_size: int = 1

    @classmethod
    def of(
        cls, s: PretrainSettings, store: FrameStore, rank: int = 0, world_size: int = 1
    ) -> PairSampler:
        return cls(store, s.pdf, s.proximity_param(), s.seed, s.pairs, rank, world_size)

    def epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchors (M,), partners (M,)) of `epoch` for this process, global frame indices."""
        return epoch_pairs(
            self.store,
            self.pdf,
            self.param,
            self.seed,
            epoch,
            rank=self.rank,
            world_size=self.world_size,
            pairs=self.pairs,
        )


def split_batches(
    anchors: torch.Tensor, partners: torch.Tensor, batch_size: int, start: int = 0
) -> list[IndexBatch]:
    """Consecutive index batches of `batch_size`, from batch number `start` on.

    A last batch of fewer than 2 pairs is dropped: the Barlow Twins standardisation and
    BatchNorm need at least two samples.
    """
    out = []
    for i in range(start * batch_size, len(anchors), batch_size):
        a, p = anchors[i : i + batch_size], partners[i : i + batch_size]
        if len(a) >= 2:
            out.append((a, p))
    return out


def num_batches(n_pairs: int, batch_size: int) -> int:
    """How many batches `split_batches` makes of n_pairs pairs."""
    full, rest = divmod(n_pairs, batch_size)
    return full + (1 if rest >= 2 else 0)


class PairBatches:
    """Iterate uint8 (x_a, x_b) batches of `frames` for a list of index batches.

    frames: uint8 (N, 3, S, S) (may be memory-mapped). workers = 0 gathers in the calling
    thread; workers >= 1 keeps up to workers + 1 batches in flight on a thread pool
    (torch's indexing releases the GIL), in order. pin: pin the gathered tensors so the
    host-to-GPU copy can be asynchronous.
    """

    def __init__(
        self,
        frames: torch.Tensor,
        batches: Sequence[IndexBatch],
        workers: int = 1,
        pin: bool = False,
    ) -> None:
        self.frames = frames
        self.batches = batches
        self.workers = workers
        self.pin = pin
        self._pool: ThreadPoolExecutor | None = None

    def _gather(self, batch: IndexBatch) -> Uint8Batch:
        a, p = batch
        x_a, x_b = self.frames[a], self.frames[p]
        if self.pin:
            x_a, x_b = x_a.pin_memory(), x_b.pin_memory()
        return x_a, x_b

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Uint8Batch]:
        if self.workers <= 0:
            for b in self.batches:
                yield self._gather(b)
            return
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tempo-batches")
        pending: deque[Future[Uint8Batch]] = deque()
        todo = iter(self.batches)
        try:
            for b in todo:
                pending.append(self._pool.submit(self._gather, b))
                if len(pending) > self.workers:
                    break
            while pending:
                ready = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(self._pool.submit(self._gather, nxt))
                yield ready
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker threads (pending batches are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class Normalizer:
    """uint8 (B, 3, S, S) on the host -> float32 (B, 3, S, S) normalised on `device`."""

    def __init__(self, device: torch.device, channels_last: bool = False) -> None:
        self.device = device
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return normalize(x)  # the one normalisation (data.transforms): ToTensor + Normalize
