"""Cost of `tempo pretrain`'s default monitor: its passes vs the training, per run.

    python benchmarks/monitor_cost.py [--video FRAMES] [--epochs 4] [--monitor auto]
        [--budget 0.05] [--rounds 3] [--steps 8]

Default input: the demo (resnet18, 32 px, batch 64, AdamW, lambda 5e-3, proximity 5;
3840 frames, 60 steps per epoch, kNN on train-5/ scored on test/ and val/). `--video N`:
instead an H.264 clip of N frames (64x64, a textured scene panning and drifting) written
with PyAV into a temporary folder, at 64 px and batch 64, without labels (the label-free
signals only), as a user's own footage would be.

The monitor is sized as `tempo pretrain` sizes it (pretrain.monitor_plan.sized_plan:
`--monitor-budget`, default 0.05); "monitor" is one `Monitor.measure` as the loop calls it
at an epoch end, "epoch" is `--steps` real training steps (TwinStep on the epoch's pair
batches) scaled to the epoch's step count. The two alternate for `--rounds` rounds and the
best round of each counts, so load from other processes hits both alike. Prints the
planned share and the measured one: passes x monitor / (epochs x epoch). Target: <= the
budget. Set TEMPO_DATA_DIR to where the demo already is (e.g. .cache/test-data).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_clip(path: Path, frames: int, size: int = 64) -> Path:
    """An H.264 clip of a textured scene that pans and drifts (PyAV, libx264)."""
    import av

    rng = np.random.default_rng(0)
    scene = (rng.random((size * 3, size * 3, 3)) * 255).astype(np.uint8)
    scene = np.repeat(np.repeat(scene[::8, ::8], 8, 0), 8, 1)  # blocks: compressible detail
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            y = int(size * (1 + np.sin(k / 40)))
            x = (k * 2) % (2 * size)
            frame = np.ascontiguousarray(scene[y : y + size, x : x + size])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        out.mux(stream.encode())
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--video", type=int, default=0, help="frames of an H.264 clip (0: demo)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--monitor", default="auto")
    p.add_argument("--budget", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()

    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.sequences import load_frame_store
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.pretrain.batches import PairSampler, num_batches, split_batches
    from tempo_cli.pretrain.distributed import DistInfo
    from tempo_cli.pretrain.monitor import Monitor
    from tempo_cli.pretrain.monitor_budget import passes
    from tempo_cli.pretrain.monitor_plan import size_line, sized_plan
    from tempo_cli.pretrain.step import TwinModel, TwinStep
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.pretrain import PretrainSettings

    tmp = tempfile.TemporaryDirectory()
    data = "demo" if not args.video else str(write_clip(Path(tmp.name) / "clip.mp4", args.video))
    s = load_settings(
        PretrainSettings,
        dict(
            data=data, backbone="resnet18", init="random", image_size=64 if args.video else 32,
            batch_size=64, optimizer="adamw", lr=1e-3, l=0.005, proximity=5, device="cpu",
            monitor=args.monitor, monitor_budget=args.budget, epochs=args.epochs,
        ),
    )  # fmt: skip
    root = resolve_dataset(s.data)
    store = load_frame_store(root, s.image_size, quiet=True)
    plan, size = sized_plan(s, root, store)
    print(f"{len(store.frames)} frames; {plan.line()}; {size_line(size, s)}")
    torch.manual_seed(0)
    twin = TwinModel(build_resnet("resnet18", "random"), head_for("resnet18"))
    device = torch.device("cpu")
    step = TwinStep(twin, s, DistInfo(), device)
    monitor = Monitor(plan, s, step.twin, store, device, size.pairs)
    anchors, partners = PairSampler.of(s, store).epoch(0)
    per_epoch = num_batches(len(anchors), s.batch_size)
    batches = split_batches(anchors, partners, s.batch_size)[: args.steps]
    monitor.measure()  # warm-up: decodes the labelled splits once per run
    best_monitor, best_step = float("inf"), float("inf")
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for a, b in batches:
            step(store.frames[a], store.frames[b])
        best_step = min(best_step, (time.perf_counter() - t0) / len(batches))
        t0 = time.perf_counter()
        monitor.measure()
        best_monitor = min(best_monitor, time.perf_counter() - t0)
        print(f"round {r + 1}: step {best_step:.3f} s, monitor {best_monitor:.2f} s (best so far)")
    epoch = best_step * per_epoch
    n = passes(s.epochs, size.every) if size.every else 0
    measured = n * best_monitor / (s.epochs * epoch)
    print(
        f"epoch ({per_epoch} steps): {epoch:.2f} s   monitor pass: {best_monitor:.3f} s   "
        f"passes: {n} of {s.epochs} epochs   share planned {size.share:.3f}, "
        f"measured {measured:.3f}"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
