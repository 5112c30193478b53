"""`torchrun --nproc-per-node N -m tempo_cli study ...`: the study as a task farm.

The units of the plan (an arm's or a repeat's pre-training, each evaluation stage) are
independent but for what they read, so each process (rank) takes the next unit from a
shared counter and runs it whole on its own device (cuda:LOCAL_RANK on GPUs), as the
one-process study would (runner.run_stage: same settings, same folder, same stage.json,
plus `rank`); the results do not depend on the number of processes. Pre-trainings come
first (the longest units); a unit whose input another rank is still making (a pre-training's
model.pt, the classifier) waits for it.

- Coordination: the key-value store of torchrun's rendezvous (`torch.distributed.
  rendezvous("env://")`; no process group, so a stage sees one process: WORLD_SIZE=1).
- Data preparation (demo generation, frame cache): once per node (LOCAL_RANK 0), before
  a barrier. Several nodes need `runs/` (and the data and cache folders) on a shared
  file system.
- Rank 0 writes study.toml first and study.json and the reports once every rank is done.
- Ctrl-C or SIGTERM: every worker stops its stage as the one-process study does (exit
  130; a rerun with any number of processes continues from the stage folders).
- A failing rank stops the others: it posts one line naming itself and the stage; every
  other rank's watcher interrupts its own stage and exits 1 with that line.
- `ddp = true` and more ranks than pre-trainings: groups of ranks train the pre-trainings
  together by DDP first (study.farm_ddp), then every rank claims evaluation units.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.report.progress import log
from tempo_cli.settings.pretrain import PretrainSettings
from tempo_cli.study.farm_ddp import ddp_groups, run_ddp_unit
from tempo_cli.study.runner import Clock, PlannedStage, run_stage
from tempo_cli.training.stop import InterruptSeen

#: Seconds between two looks at the store while waiting (a unit's input, the others).
POLL = 0.2
#: Keys of the farm in the rendezvous store.
_PREFIX = "tempo-study/"


@dataclass(frozen=True)
class FarmInfo:
    """This process in the torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @classmethod
    def from_env(cls) -> FarmInfo | None:
        """The job torchrun describes, None for one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        return cls(
            int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")),
            local_world,
        )  # fmt: skip


def dependencies(plan: list[PlannedStage]) -> list[int | None]:
    """For each planned stage, the index of the stage that makes the file it reads (its
    arm's or repeat's pre-training or classifier), None when it reads none of theirs."""
    makers: dict[tuple[str, int | None, str], int] = {}
    deps: list[int | None] = []
    for i, p in enumerate(plan):
        reads = p.record.reads
        deps.append(makers.get((p.arm.name, p.repeat, reads)) if reads else None)
        if p.provides:
            makers[(p.arm.name, p.repeat, p.provides[0])] = i
    return deps


def unit_order(plan: list[PlannedStage]) -> list[int]:
    """The order units are handed out: pre-trainings (resumable, the long ones) first, then
    the units that read none of theirs (a baseline arm's stages), then the rest, each group
    in plan order; a unit's input always comes earlier."""
    deps = dependencies(plan)
    long = [i for i, p in enumerate(plan) if p.record.resumes]
    free = [i for i, p in enumerate(plan) if not p.record.resumes and deps[i] is None]
    return long + free + [i for i in range(len(plan)) if i not in long and i not in free]


class Farm:
    """The rendezvous store's side of the farm: claims, done units, a failure, barriers."""

    def __init__(self, info: FarmInfo) -> None:
        import torch.distributed as dist

        store, _, _ = next(dist.rendezvous("env://"))
        self.store = dist.PrefixStore(_PREFIX, store)
        self.info = info
        self.failure: str | None = None

    def claim(self) -> int:
        """The next position in the unit order (0-based; past the end: none left)."""
        return int(self.store.add("next", 1)) - 1

    def done(self, index: int) -> None:
        self.store.set(f"done/{index}", str(self.info.rank))

    def fail(self, line: str) -> None:
        self.store.set("failed", line)

    def failed(self) -> str | None:
        if self.store.check(["failed"]):
            return self.store.get("failed").decode()
        return None

    def wait_done(self, index: int) -> None:
        """Until unit `index` is done (by any rank); TempoError when a rank failed."""
        while not self.store.check([f"done/{index}"]):
            self.raise_failed()
            time.sleep(POLL)

    def gather(self, key: str, count: int) -> None:
        """A barrier on a counter: add 1, then wait until `count` arrived."""
        self.store.add(key, 1)
        while int(self.store.add(key, 0)) < count:
            self.raise_failed()
            time.sleep(POLL)

    def settle(self, unit: int, seconds: float = 5.0) -> tuple[str, str] | None:
        """Why DDP unit `unit`'s group broke off, as a peer posts it within `seconds` (its
        error reaches this rank as a broken collective, before its line): ("failed", the
        failure's line) or ("interrupted", the peer's rank); None when nobody says."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (line := self.failure or self.failed()) is not None:
                return "failed", line
            if self.store.check([key := f"ddp/{unit}/interrupted"]):
                return "interrupted", self.store.get(key).decode()
            time.sleep(POLL)
        return None

    def wait_count(self, key: str, count: int) -> None:
        while int(self.store.add(key, 0)) < count:
            self.raise_failed()
            time.sleep(POLL)

    def raise_failed(self) -> None:
        line = self.failed()
        if line is not None:
            self.failure = line
            raise TempoError(f"rank {self.info.rank} stopped: {line}")


class Watcher(threading.Thread):
    """Interrupts this rank's running stage (as a Ctrl-C would) when another rank failed."""

    def __init__(self, farm: Farm) -> None:
        super().__init__(daemon=True)
        self.farm, self.stop = farm, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            line = self.farm.failed()
            if line is not None and self.farm.failure is None:
                self.farm.failure = line
                _thread.interrupt_main()
                return


def prepare_data(plan: list[PlannedStage], quiet: bool) -> None:
    """What every stage would make on first use, made once: the datasets (demo
    generation) and the pre-trainings' frame caches."""
    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.sequences import load_frame_store

    seen: set[tuple[str, int]] = set()
    for p in plan:
        data = getattr(p.settings, "data", None)
        if isinstance(data, str):
            root = resolve_dataset(data)
            size = getattr(p.settings, "image_size", None)
            if p.record.resumes and isinstance(size, int) and (data, size) not in seen:
                seen.add((data, size))
                load_frame_store(root, size, quiet=quiet)


def _one_process_env(info: FarmInfo) -> None:
    """A stage run by the farm sees one process on this rank's device."""
    os.environ.update({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (torchrun stopping its workers) stops a stage as Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda s, f: signal.raise_signal(signal.SIGINT))


def run_farm(
    info: FarmInfo, plan: list[PlannedStage], forced: frozenset[str], quiet: bool, ddp: bool
) -> bool:
    """Run this rank's share of `plan` (`ddp`: the study's key); True on rank 0 once every
    rank is done (it then writes study.json and the reports), False on the others."""
    farm = Farm(info)
    _sigterm_as_ctrl_c()
    if info.local_rank == 0:
        try:
            prepare_data(plan, quiet)
        except TempoError as e:
            farm.fail(f"rank {info.rank} failed preparing the data: {e}")
            raise TempoError(f"rank {info.rank} failed preparing the data: {e}") from e
        farm.store.add("prepared", 1)
    farm.wait_count("prepared", info.nodes)
    _one_process_env(info)
    groups = _groups(info, plan, quiet) if ddp else []
    watcher = Watcher(farm)
    watcher.start()
    try:
        _work(farm, plan, forced, quiet, groups)
        farm.gather("finished", info.world_size)
    except KeyboardInterrupt:  # between two units, or waiting for the others
        if farm.failure is not None:
            raise TempoError(f"rank {info.rank} stopped: {farm.failure}") from None
        raise Interrupted(
            f"rank {info.rank}: interrupted; rerun the same command (with any number of "
            "processes) to continue"
        ) from None
    finally:
        watcher.stop.set()
    return info.rank == 0


def _groups(info: FarmInfo, plan: list[PlannedStage], quiet: bool) -> list[tuple[int, ...]]:
    """The DDP groups of the pre-trainings (study.farm_ddp), said once by rank 0."""
    units = [plan[i] for i in unit_order(plan) if plan[i].record.resumes]
    groups = ddp_groups(
        info.world_size, [cast(PretrainSettings, p.settings).batch_size for p in units]
    )
    if groups:
        spare = info.world_size - sum(len(g) for g in groups)
        log(f"ddp: {len(groups)} pre-training(s) on {len(groups[0])} processes each"
            + (f", {spare} rank(s) spare" if spare else ""), quiet or info.rank != 0)  # fmt: skip
    elif units:
        log("ddp: too few processes per pre-training (or batch sizes that do not split); "
            "each runs on one process", quiet or info.rank != 0)  # fmt: skip
    return groups


def _work(
    farm: Farm,
    plan: list[PlannedStage],
    forced: frozenset[str],
    quiet: bool,
    groups: list[tuple[int, ...]],
) -> None:
    """This rank's DDP pre-training (if in a group), then claim and run units until none is
    left (past the pre-trainings when they ran in groups)."""
    deps, order = dependencies(plan), unit_order(plan)
    ordered = [plan[i] for i in order]
    clock, rank = Clock(), farm.info.rank
    with InterruptSeen() as ctrl_c:
        for k, ranks in enumerate(groups):
            if rank not in ranks:
                continue
            i, p = order[k], plan[order[k]]
            line = f"{clock.line(k + 1, ordered)} · ranks {', '.join(map(str, ranks))}"
            with _guarded(farm, p, ddp_unit=i):
                seconds = run_ddp_unit(
                    farm, p, i, ranks, p.stage in forced, line, quiet, ctrl_c
                )  # fmt: skip
            if rank == ranks[0]:
                farm.done(i)
            if seconds is not None:
                clock.ran.setdefault(p.stage, []).append(seconds)
        while (k := farm.claim() + len(groups)) < len(order):
            i, p = order[k], plan[order[k]]
            with _guarded(farm, p):
                if (dep := deps[i]) is not None:
                    farm.wait_done(dep)
                line = f"{clock.line(k + 1, ordered)} · rank {rank}"
                seconds = run_stage(p, p.stage in forced, line, quiet, ctrl_c, rank=rank)
            farm.done(i)
            if seconds is not None:
                clock.ran.setdefault(p.stage, []).append(seconds)
    log(f"rank {rank}: no unit left", quiet)


@contextlib.contextmanager
def _guarded(farm: Farm, p: PlannedStage, ddp_unit: int | None = None) -> Iterator[None]:
    """One unit's failures as the farm reports them: Ctrl-C (130), this rank's failure
    posted to the others, another rank's failure (`rank Q stopped: ...`). In a DDP group
    (`ddp_unit`: the unit's index) a peer's stop may reach this rank first as a broken
    collective: an interrupted rank says so to its group, the others wait for its word."""
    rank = farm.info.rank
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as e:
        if farm.failure is not None:
            raise TempoError(f"rank {rank} stopped: {farm.failure}") from None
        if ddp_unit is not None:
            farm.store.set(f"ddp/{ddp_unit}/interrupted", str(rank))
        raise Interrupted(
            f"rank {rank}: interrupted in {p.label} {p.stage}; rerun the same command "
            "(with any number of processes) to continue"
        ) from e
    except TempoError as e:
        if farm.failure is not None:
            raise TempoError(f"rank {rank} stopped: {farm.failure}") from None
        line = f"rank {rank} failed in {p.label} {p.stage}: {e}"
        farm.failure = line
        farm.fail(line)
        raise TempoError(line) from e
    except Exception as e:  # a bug: the others stop too, the traceback stays here
        said = farm.settle(ddp_unit) if ddp_unit is not None else None
        if said is not None and said[0] == "failed":
            raise TempoError(f"rank {rank} stopped: {said[1]}") from None
        if said is not None:
            raise Interrupted(
                f"rank {rank}: stopped in {p.label} {p.stage}, rank {said[1]} of its DDP group "
                "was interrupted; rerun the same command (with any number of processes) to "
                "continue"
            ) from None
        farm.fail(f"rank {rank} failed in {p.label} {p.stage}: {type(e).__name__}: {e}")
        raise
