"""Which measure tells a near-copy from a distinct image (docs/data.md "Near-copies").

    python benchmarks/near_copies.py [ASL_SAMPLE] [DEMO_ROOT]

On the 120 real photos of asl-sample (all pairs) and on the demo (test and val against
train) it prints the highest score of distinct images under tempo's measure (zero-mean
normalised correlation of 32x32 grey thumbnails, `data/near_copies.py`), the lowest score of
a resized and JPEG re-encoded copy of every asl-sample photo, and, for comparison, how many
distinct pairs 8x8 average and difference hashes put within 4 bits.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tempo_cli.data.near_copies import THRESHOLD, THUMB, best_matches, normalise, thumbnails


def _hashes(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    a, d = [], []
    for p in paths:
        g = Image.open(p).convert("L")
        x = np.asarray(g.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
        a.append((x > x.mean()).reshape(-1))
        y = np.asarray(g.resize((9, 8), Image.Resampling.BOX), dtype=np.float32)
        d.append((y[:, 1:] > y[:, :-1]).reshape(-1))
    return np.stack(a), np.stack(d)


def _close_pairs(bits: np.ndarray, q: np.ndarray | None = None, within: int = 4) -> int:
    """Pairs within `within` bits: all pairs of `bits`, or each row of `q` against `bits`."""
    if q is None:
        dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
        return int((np.triu(dist <= within, k=1)).sum())
    dist = (q[:, None, :] != bits[None, :, :]).sum(-1)
    return int((dist.min(1) <= within).sum())


def _reencoded(path: Path) -> Image.Image:
    """The photo at 75% size, JPEG quality 85, decoded again."""
    im = Image.open(path).convert("RGB")
    small = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=85)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def asl(root: Path) -> None:
    paths = sorted((root / "test").glob("*/*.png"))
    t = thumbnails(paths)
    s = t @ t.T
    s.fill_diagonal_(-1)
    print(f"asl-sample: {len(paths)} photos, {len(paths) * (len(paths) - 1) // 2} pairs")
    print(f"  distinct photos, highest score:      {float(s.max()):.4f}")
    rows = [
        np.asarray(
            _reencoded(p).convert("L").resize((THUMB, THUMB), Image.Resampling.BOX),
            dtype=np.float32,
        ).reshape(-1)
        for p in paths
    ]
    own = (normalise(torch.from_numpy(np.stack(rows))) * t).sum(1)  # each copy vs its photo
    print(f"  re-encoded copy (75% size, JPEG 85), lowest score: {float(own.min()):.4f}")
    ah, dh = _hashes(paths)
    print(f"  8x8 average hash, distinct pairs within 4 bits:    {_close_pairs(ah)}")
    print(f"  8x8 difference hash, distinct pairs within 4 bits: {_close_pairs(dh)}")


def demo(root: Path) -> None:
    train = sorted((root / "train").glob("*/*.png"))
    t = thumbnails(train)
    ah, dh = _hashes(train)
    for split in ("val", "test"):
        paths = sorted((root / split).glob("*/*.png"))
        q = thumbnails(paths)
        score, _ = best_matches(q, t)
        qa, qd = _hashes(paths)
        print(
            f"demo {split} ({len(paths)}) vs train ({len(train)}): highest score "
            f"{float(score.max()):.4f}; within 4 bits of a train image: average hash "
            f"{_close_pairs(ah, qa)}, difference hash {_close_pairs(dh, qd)}"
        )


def main() -> None:
    asl_root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/asl-sample")
    if len(sys.argv) > 2:
        demo_root = Path(sys.argv[2])
    else:
        from tempo_cli.data.demo import ensure_demo

        demo_root = ensure_demo()
    print(f"threshold in tempo: {THRESHOLD}")
    asl(asl_root)
    demo(demo_root)


if __name__ == "__main__":
    main()
