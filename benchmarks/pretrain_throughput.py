"""Pre-training throughput: the full loop (data + step) vs model-only steps, same config.

    python benchmarks/pretrain_throughput.py [--device cpu] [--image-size 64]
        [--batch-size 64] [--backbone resnet18] [--frames 640] [--rounds 3] [--workers 1]
        [--precision auto|fp32|bf16|fp16]

"full loop": `tempo_cli.pretrain.run` on a synthetic frames folder (decoded once into
the frame cache beforehand), pairs/s as the loop itself reports it for its second epoch
(metrics.json `pairs_per_s`: pair sampling, uint8 gathers, normalisation, forward, loss,
backward, optimiser step, loss logging; the first epoch is a warm-up).
"model only": the same TwinModel, loss and optimiser on pre-made normalised tensors, as
many steps as an epoch has, in the same `--precision` mode (pretrain.precision: autocast,
layout, gradient scaler) as the loop. The two alternate for `--rounds` rounds and the best round of
each counts, so load from other processes on the machine hits both alike.
Target on CPU (resnet18, 64 px, batch 64): full / model-only >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_frames(folder: Path, n: int, size: int) -> None:
    """n smoothly changing frames (PNG), like a video."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.random((size, size, 3))
    for i in range(n):
        img = 255 * (0.7 * np.roll(base, i, axis=1) + 0.3 * rng.random((size, size, 3)))
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:05d}.png")


def full_loop(args: argparse.Namespace, frames: Path) -> float:
    """pairs/s of the real training loop in its second epoch."""
    from tempo_cli.pretrain import run
    from tempo_cli.settings.pretrain import PretrainSettings

    metrics = run(
        PretrainSettings(
            data=str(frames),
            backbone=args.backbone,
            init="random",
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=2,
            optimizer="sgd",
            proximity=5,
            device=args.device,
            workers=args.workers,
            precision=args.precision,
            name="throughput",
            quiet=True,
        )
    )
    return float(metrics["epochs"][-1]["pairs_per_s"])


def model_only(args: argparse.Namespace, steps: int) -> float:
    """pairs/s of forward + loss + backward + step on pre-made tensors (after 2 warm-ups)."""
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.pretrain.precision import precision_for
    from tempo_cli.pretrain.step import TwinModel

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    torch.manual_seed(0)
    model = TwinModel(build_resnet(args.backbone, "random"), head_for(args.backbone)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = BarlowTwinsLoss(1e-3)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    x_a, x_b = torch.randn(shape, device=device), torch.randn(shape, device=device)
    precision = precision_for(args.precision, device)
    amp, scaler = precision.autocast(device.type), precision.scaler(device.type)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x_a = x_a.contiguous(memory_format=torch.channels_last)
        x_b = x_b.contiguous(memory_format=torch.channels_last)

    def step() -> torch.Tensor:
        with amp:
            z_a, z_b = model(x_a, x_b)
        loss = loss_fn(z_a, z_b)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)  # the loop reads its losses back too
    return steps * args.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--frames", type=int, default=640)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="tempo-bench-") as tmp:
        tmp_path = Path(tmp)
        for name in ("cache", "runs", "models", "data"):
            os.environ[f"TEMPO_{name.upper()}_DIR"] = str(tmp_path / name)
        frames = tmp_path / "frames"
        write_frames(frames, args.frames, args.image_size)
        print(
            f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, "
            f"device {args.device}, {torch.get_num_threads()} threads, workers {args.workers}, "
            f"precision {args.precision}"
        )
        from tempo_cli.data.sequences import load_frame_store

        load_frame_store(frames, args.image_size)  # decode once: not what is timed
        fulls, onlys = [], []
        for r in range(args.rounds):
            fulls.append(full_loop(args, frames))
            onlys.append(model_only(args, args.frames // args.batch_size))
            print(f"  round {r + 1}: full {fulls[-1]:.1f}, model-only {onlys[-1]:.1f} pairs/s")
        full, only = max(fulls), max(onlys)
    print(f"full loop (data + step): {full:9.1f} pairs/s")
    print(f"model-only steps:        {only:9.1f} pairs/s")
    print(f"ratio full / model-only: {full / only:9.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
