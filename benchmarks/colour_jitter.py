"""`--augment strong`'s colour jitter: batched with per-image factors (pretrain.colour_jitter,
what tempo runs) vs torchvision's functional ops called image by image, side by side.

    python benchmarks/colour_jitter.py [--batch 64] [--size 32] [--device cpu] [--rounds 3]

Both compute the same pixels (bit for bit, checked here and in the tests) on one view's
draws of the strong recipe. The two alternate for `--rounds` rounds and the best round of
each counts. Prints both times and per-image / batched; for scale, also one whole strong
view (`apply_view`: crop, flip, jitter, grayscale, blur, solarise).
"""

from __future__ import annotations

import argparse

import torch
from timing import best_time  # benchmarks/timing.py, beside this script
from torchvision.transforms.v2 import functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    from tempo_cli.pretrain.augment import AUGMENTS, apply_view, draw_view, step_generator
    from tempo_cli.pretrain.colour_jitter import jitter_batch

    dev = torch.device(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = x.to(dev)
    view = draw_view(AUGMENTS["strong"].views[0], args.batch, args.size, step_generator(0, 0, 0, 0))
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def per_image() -> torch.Tensor:
        out = []
        for i, img in enumerate(x):
            for k in view.order[i].tolist():
                img = ops[k](img, float(view.factors[i, k]))
            out.append(img)
        sync()
        return torch.stack(out)

    def batched() -> torch.Tensor:
        out = jitter_batch(x, view.factors, view.order)
        sync()
        return out

    assert torch.equal(per_image(), batched()), "the two implementations disagree"
    times: dict[str, float] = {}
    for _ in range(args.rounds):  # alternate, so machine load hits both alike
        for name, fn in (("per-image", per_image), ("batched", batched)):
            times[name] = min(times.get(name, 1e9), best_time(fn, 3, 1))
    whole = best_time(lambda: (apply_view(x.clone(), view), sync()), 3, args.rounds)
    for name, t in times.items():
        print(f"{name:9s}: colour jitter of {args.batch} images {t * 1e3:8.1f} ms")
    print(f"per-image / batched: {times['per-image'] / times['batched']:.1f}x")
    print(f"whole strong view (apply_view, batched jitter): {whole * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
