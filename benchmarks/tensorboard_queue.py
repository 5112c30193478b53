"""A SummaryWriter's queue length, side by side: the 36,000 scalar events one demo linear
sweep writes (4 budgets x 3 lrs, 3,001 steps each, two values per event, as
`evaluate.run._write_tensorboard` writes them) with torch's default queue (10 events) and
with tempo's (`report.run_dir.TENSORBOARD_QUEUE`); then checks that both event files hold
the same events.

    python benchmarks/tensorboard_queue.py [--results 12] [--steps 3001] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def write(folder: Path, queue: int, results: int, steps: int) -> float:
    """Seconds to write the events and close the writer."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    started = time.perf_counter()
    writer = SummaryWriter(log_dir=str(folder), max_queue=queue)
    file_writer = writer.file_writer
    assert file_writer is not None
    for r in range(results):
        for step in range(steps):
            values = [
                Summary.Value(tag="accuracy", simple_value=(r + step % 97) / 200),
                Summary.Value(tag="accuracy_std", simple_value=step % 13 / 100),
            ]
            file_writer.add_event(Event(summary=Summary(value=values)), step, 1.0)
        writer.flush()
    writer.close()
    return time.perf_counter() - started


def events(folder: Path) -> list[tuple[int, str, float]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (path,) = folder.glob("events.out.tfevents.*")
    return [
        (e.step, v.tag, v.simple_value)
        for e in EventFileLoader(str(path)).Load()
        for v in e.summary.value
    ]


def main() -> None:
    from tempo_cli.report.run_dir import TENSORBOARD_QUEUE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3001)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for queue in (10, TENSORBOARD_QUEUE):
                folder = Path(tmp) / f"{queue}-{k}"
                t = write(folder, queue, args.results, args.steps)
                best[queue] = min(best.get(queue, t), t)
        same = events(Path(tmp) / "10-0") == events(Path(tmp) / f"{TENSORBOARD_QUEUE}-0")
    n = args.results * args.steps
    print(f"{n} events ({2 * n} scalars), best of {args.rounds}:")
    print(f"  max_queue 10 (torch's default): {best[10]:.2f} s")
    print(f"  max_queue {TENSORBOARD_QUEUE} (tempo's):      {best[TENSORBOARD_QUEUE]:.2f} s")
    print(f"  ratio: {best[10] / best[TENSORBOARD_QUEUE]:.1f}x; the same events: {same}")


if __name__ == "__main__":
    main()
