"""Cost of `tempo pretrain --monitor knn`: one monitor pass vs one epoch of training.

    python benchmarks/monitor_cost.py [--monitor knn|linear|none] [--rounds 3] [--steps 8]

On the demo defaults (resnet18, 32 px, batch 64, AdamW, lambda 5e-3, proximity 5: the
frames of `demo`, 60 steps per epoch): "monitor" is `Monitor.measure` as the loop calls
it at an epoch end (kNN features of train-5/test/val through evaluate's FeatureSource,
label-free signals on 512 pairs); "epoch" is `--steps` real training steps (TwinStep on
pair batches of the epoch, as the loop makes them) scaled to the epoch's step count. The
two alternate for `--rounds` rounds and the best round of each counts, so load from other
processes on the machine hits both alike. Prints both times and monitor / epoch.
Target: < 0.10. Set TEMPO_DATA_DIR to where the demo already is (e.g. .cache/test-data)
to skip generating it.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--monitor", default="knn")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()

    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.pairs import epoch_pairs
    from tempo_cli.data.sequences import load_frame_store
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.pretrain.batches import num_batches, split_batches
    from tempo_cli.pretrain.distributed import DistInfo
    from tempo_cli.pretrain.monitor import Monitor, plan_monitor
    from tempo_cli.pretrain.step import TwinModel, TwinStep
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.pretrain import PretrainSettings

    s = load_settings(
        PretrainSettings,
        dict(
            data="demo", backbone="resnet18", init="random", image_size=32, batch_size=64,
            optimizer="adamw", lr=1e-3, l=0.005, proximity=5, device="cpu",
            monitor=args.monitor,
        ),
    )  # fmt: skip
    data = resolve_dataset(s.data)
    store = load_frame_store(data, s.image_size, quiet=True)
    torch.manual_seed(0)
    twin = TwinModel(build_resnet("resnet18", "random"), head_for("resnet18"))
    device = torch.device("cpu")
    step = TwinStep(twin, s, DistInfo(), device)
    monitor = Monitor(plan_monitor(s, data), s, step.twin, store, device)
    anchors, partners = epoch_pairs(store, s.pdf, s.proximity_param(), s.seed, 0)
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
    print(f"epoch ({per_epoch} steps): {epoch:.1f} s   monitor ({args.monitor}): "
          f"{best_monitor:.2f} s   monitor / epoch: {best_monitor / epoch:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
