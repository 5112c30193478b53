"""`ddp = true` in a study file: ranks beyond the pre-trainings join them by DDP.

Under torchrun with more processes than pre-training units, the processes are split into
equal groups of contiguous ranks, one group per pre-training (unit order): group j is ranks
j*k .. j*k+k-1, k the largest number of processes per pre-training that the ranks allow
(world_size // units) and that divides every pre-training's batch size with at least 2
pairs per process; the ranks left over go straight to the evaluation units. torchrun
numbers the ranks of one machine contiguously, so a group stays on one machine when its
size divides the processes per machine (or the other way round).

Each group forms a process group of its own over the farm's store (gloo on CPU, NCCL on
GPUs; one GPU per process, cuda:LOCAL_RANK), which `pretrain.distributed.setup` finds and
uses: the pre-training runs as `torchrun --nproc-per-node k -m tempo_cli pretrain` would
run it (the batch split over the k processes, each process's BatchNorm on its own share;
hence other numbers than one process's). The group's first rank leads: it decides (skip,
resume, run) and writes the stage folder through `runner.run_stage`, as one process would,
recording `ddp_ranks`; the pre-training itself writes on its group's rank 0 only. The
other members run the same settings and write nothing. The group size is part of the
stage's fingerprint: a rerun with another group size reruns the pre-training.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tempo_cli.settings.base import CommandSettings
from tempo_cli.study.runner import DdpRun, PlannedStage, run_stage
from tempo_cli.training.stop import InterruptSeen

if TYPE_CHECKING:
    from tempo_cli.study.farm import Farm


def ddp_groups(world_size: int, batch_sizes: list[int]) -> list[tuple[int, ...]]:
    """The global ranks that train each pre-training (one batch size each, in unit order)
    by DDP (module docstring); [] when fewer than 2 processes per pre-training fit (then
    each pre-training runs on one process, as without `ddp`)."""
    if not batch_sizes:
        return []
    k = world_size // len(batch_sizes)
    while k >= 2 and any(b % k or b // k < 2 for b in batch_sizes):
        k -= 1
    if k < 2:
        return []
    return [tuple(range(j * k, (j + 1) * k)) for j in range(len(batch_sizes))]


def _key(index: int, what: str) -> str:
    return f"ddp/{index}/{what}"


@contextlib.contextmanager
def process_group(farm: Farm, index: int, ranks: tuple[int, ...], device: str) -> Iterator[None]:
    """The process group of unit `index`'s DDP `ranks`, over the farm's store, while the
    unit runs (this process's rank in it: its place in `ranks`). The members first wait for
    each other on the store (a failure elsewhere stops that wait with one line)."""
    import torch
    import torch.distributed as dist

    from tempo_cli.runtime import resolve_device

    farm.gather(_key(index, "joined"), len(ranks))
    backend, device_id = "gloo", None
    if resolve_device(device).type == "cuda":  # the farm set this rank's GPU
        backend, device_id = "nccl", torch.device("cuda", torch.cuda.current_device())
    store = dist.PrefixStore(_key(index, "pg/"), farm.store)
    rank = ranks.index(farm.info.rank)
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=len(ranks), device_id=device_id
    )  # fmt: skip
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_ddp_unit(
    farm: Farm,
    p: PlannedStage,
    index: int,
    ranks: tuple[int, ...],
    force: bool,
    line: str,
    quiet: bool,
    ctrl_c: InterruptSeen,
) -> float | None:
    """This process's part of pre-training `p` (unit `index`) in its DDP group: the leader
    (`ranks[0]`) runs `runner.run_stage` (its wall time, None when skipped), a member what
    the leader decided (None)."""
    with process_group(farm, index, ranks, str(getattr(p.settings, "device", "cpu"))):
        if farm.info.rank == ranks[0]:

            def start(settings: CommandSettings | None) -> None:
                resume = getattr(settings, "resume", None) or ""
                farm.store.set(
                    _key(index, "start"), "skip" if settings is None else f"run:{resume}"
                )

            ddp = DdpRun(ranks, start)
            return run_stage(p, force, line, quiet, ctrl_c, rank=ranks[0], ddp=ddp)
        _run_member(farm, p, index, ctrl_c)
        return None


def _run_member(farm: Farm, p: PlannedStage, index: int, ctrl_c: InterruptSeen) -> None:
    """Wait for the leader's decision, then run the same settings (its resume included);
    the member's output is dropped (the leader's is the stage's)."""
    from tempo_cli.study.farm import POLL

    key, stopped = _key(index, "start"), _key(index, "interrupted")
    while not farm.store.check([key]):
        farm.raise_failed()
        if farm.store.check([stopped]):  # the leader was interrupted before it decided
            raise KeyboardInterrupt
        time.sleep(POLL)
    decision = farm.store.get(key).decode()
    if decision == "skip":
        return
    settings = p.settings
    if resume := decision.removeprefix("run:"):
        settings = settings.model_copy(update={"resume": Path(resume)})
    with contextlib.redirect_stdout(io.StringIO()):
        p.record.run(settings)
    if ctrl_c.seen:
        raise KeyboardInterrupt
