"""Process-group setup for `torchrun --nproc-per-node N -m tempo_cli pretrain ...`.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a plain
`tempo pretrain` has none of them and runs as one process. A process group that a caller
(a notebook, a test) initialised already is used as it is and left open afterwards.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tempo_cli.errors import TempoError
from tempo_cli.runtime import resolve_device


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_min(self, value: int) -> int:
        """The minimum of an integer over all ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def any_flags(self, *flags: bool) -> tuple[bool, ...]:
        """Element-wise OR of boolean flags over all ranks (one small all-reduce)."""
        if not self.distributed:
            return tuple(flags)
        t = torch.tensor([float(f) for f in flags], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average BatchNorm running statistics over the ranks (all ranks call this).

        DDP broadcasts rank 0's buffers before each forward, but the last forward of a
        stretch updates every rank's own copy; averaging makes the ranks identical and
        lets every rank's frames count in the saved statistics.
        """
        if not self.distributed:
            return
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b.div_(self.world_size)

    def close(self) -> None:
        if self.created and dist.is_initialized():
            dist.destroy_process_group()


def _collective_device() -> torch.device:
    """NCCL collectives need CUDA tensors; gloo needs CPU tensors."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the job described by the environment (or an existing group) -> (info, device).

    One process (no WORLD_SIZE or WORLD_SIZE=1): DistInfo() and `resolve_device(device_name)`.
    Several: one device per process (cuda:LOCAL_RANK on GPUs).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        created = False
        world_size = dist.get_world_size()
    else:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        created = world_size > 1
    device = resolve_device(device_name)
    if world_size <= 1:
        return DistInfo(), device
    if device.type == "mps":
        raise TempoError("distributed training on MPS is not supported; use --device cpu")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TempoError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if created:
        if not dist.is_available():
            raise TempoError("this PyTorch build has no torch.distributed; run one process")
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return (
        DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, created=created),
        device,
    )
