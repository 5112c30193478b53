"""AdamW's update: PyTorch's fused kernel (what `tempo pretrain --optimizer adamw` uses on
CPU and CUDA) vs the per-parameter loop (PyTorch's default on CPU), side by side.

    python benchmarks/optimizer_step.py [--backbone resnet18] [--device cpu] [--rounds 3]

Times `optimizer.step()` on the pre-training model (backbone + Barlow Twins projector, real
gradients of one step at 32 px, batch 64) and, for scale, one whole step (forward, loss,
backward, update) with each. The implementations alternate for `--rounds` rounds and the
best round of each counts. Prints the times and loop / fused.
"""

from __future__ import annotations

import argparse

import torch
from timing import best_time  # benchmarks/timing.py, beside this script


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.pretrain.step import TwinModel

    dev = torch.device(args.device)
    torch.manual_seed(0)
    twin = TwinModel(build_resnet(args.backbone, "random"), head_for(args.backbone)).to(dev)
    loss_fn = BarlowTwinsLoss(0.005)
    x_a, x_b = torch.randn(2, 64, 3, 32, 32, device=dev)
    opts = {
        "loop": torch.optim.AdamW(twin.parameters(), lr=1e-3, foreach=False),
        "fused": torch.optim.AdamW(twin.parameters(), lr=1e-3, fused=True),
    }

    def backward() -> None:
        twin.zero_grad(set_to_none=True)
        loss_fn(*twin(x_a, x_b)).backward()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    backward()
    update: dict[str, float] = {}
    whole: dict[str, float] = {}
    for _ in range(args.rounds):  # alternate, so machine load hits both alike
        for name, opt in opts.items():

            def apply(opt: torch.optim.Optimizer = opt) -> None:
                opt.step()
                sync()

            def step(opt: torch.optim.Optimizer = opt) -> None:
                backward()
                opt.step()
                sync()

            update[name] = min(update.get(name, 1e9), best_time(apply, 20, 1))
            whole[name] = min(whole.get(name, 1e9), best_time(step, 5, 1))
    for name in opts:
        ms_update, ms_step = update[name] * 1e3, whole[name] * 1e3
        print(f"{name:5s}: optimizer.step {ms_update:7.1f} ms, whole step {ms_step:7.1f} ms")
    print(
        f"loop / fused: optimizer.step {update['loop'] / update['fused']:.2f}x, "
        f"whole step {whole['loop'] / whole['fused']:.2f}x"
    )


if __name__ == "__main__":
    main()
