"""Background noise std of `tempo explain adversarial --attack noise` drawn in the study's
figure geometry (3 x 6 panels, 18.5 x 10.5 inches, 100 dpi, 128 px flat grey images).

Compares with the std measured on the study's published noise figure (docs/explain.md):

    python benchmarks/noise_in_figures.py gaussian      # tempo's default noise model
    python benchmarks/noise_in_figures.py uniform       # --noise uniform
"""

from __future__ import annotations

import io
import sys

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from tempo_cli.explain.attacks import ATTACKS, AttackOptions

LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
STUDY = [0.024, 0.048, 0.068, 0.090, 0.108]  # levels 0.1-0.5, from the published figure


def background_std(noise: str) -> list[float]:
    """Std of the drawn pixels inside each noisy panel of the first row (levels 0.1-0.5)."""
    grey = torch.full((1, 3, 128, 128), 0.5)
    opts = AttackOptions.default(seed=0, noise=noise)
    noise_attack = ATTACKS["noise"]
    images = [
        noise_attack.perturb(None, grey, None, lv, indices=[0], options=opts)[0] for lv in LEVELS
    ]
    fig = Figure(figsize=(18.5, 10.5))
    axes = fig.subplots(3, 6, squeeze=False)
    for c, x in enumerate(images):
        for r in range(3):
            axes[r][c].imshow(x.permute(1, 2, 0).numpy())
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    pixels = np.asarray(Image.open(buf).convert("RGB")).astype(float) / 255
    height = pixels.shape[0]
    out = []
    for c in range(1, 6):
        box = axes[0][c].get_window_extent()  # display coordinates: y from the bottom
        x0, x1 = int(box.x0) + 4, int(box.x1) - 4
        y0, y1 = height - int(box.y1) + 4, height - int(box.y0) - 4
        out.append(float(pixels[y0:y1, x0:x1].std()))
    return out


def main() -> None:
    noise = sys.argv[1] if len(sys.argv) > 1 else "gaussian"
    ours = background_std(noise)
    print("level     " + "  ".join(f"{lv:5.1f}" for lv in LEVELS[1:]))
    print(f"{noise:9} " + "  ".join(f"{v:5.3f}" for v in ours))
    print("study     " + "  ".join(f"{v:5.3f}" for v in STUDY))
    print("ratio     " + "  ".join(f"{a / b:5.2f}" for a, b in zip(ours, STUDY, strict=True)))


if __name__ == "__main__":
    main()
