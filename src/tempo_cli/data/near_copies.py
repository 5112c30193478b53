"""Near-copies: a test (or val) image whose twin is in train measures memory, not features.

The measure: each image -> a 32x32 grey thumbnail (the whole image, box-filtered), minus its
mean, divided by its norm; two images' score is the dot product of their thumbnails (the
zero-mean normalised correlation, in [-1, 1]). A pair at or above `THRESHOLD` is a near-copy.
Measured with `python benchmarks/near_copies.py` (docs/data.md): distinct photos score at
most 0.945 (asl-sample, all 7,140 pairs of its 120 photos) and 0.951 (demo, test and val
against train), every photo resized to 75% and re-encoded as JPEG at least 0.9998; 8x8
average or difference hashes, by contrast, put 173 and 17 distinct asl-sample pairs (and 81%
and 61% of the demo's test images) within 4 bits. The threshold sits between.

`check_splits(data)` compares val and test with train (once per file list: the result is
cached under `places.cache_dir()/near_copies/`), `warning(result)` is the one-line warning
every command prints for it, also under `--quiet`. `best_matches(queries, references)` is
the core, on thumbnails (`thumbnails(paths)`, or `thumbnails_of(uint8 images)` for frames
already decoded, e.g. a pre-training `FrameStore`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from tempo_cli import atomic, places
from tempo_cli.data.frames import read_image

if TYPE_CHECKING:
    from tempo_cli.data.labelled_data import LabelledData

THUMB = 32
#: Scores at or above this are near-copies (module doc: distinct <= 0.96, copies ~0.999).
THRESHOLD = 0.985
_VERSION = 1


def _thumb(path: Path) -> np.ndarray:
    image = read_image(path).convert("L").resize((THUMB, THUMB), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32).reshape(-1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 -> zero-mean rows of unit norm (a flat image stays all zeros)."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def thumbnails(paths: Sequence[Path]) -> torch.Tensor:
    """float32 (N, 1024): the normalised 32x32 grey thumbnails of image files."""
    if not paths:
        return torch.zeros(0, THUMB * THUMB)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(_thumb, paths))
    return normalise(torch.from_numpy(np.stack(rows)))


def thumbnails_of(images: torch.Tensor) -> torch.Tensor:
    """float32 (N, 1024) thumbnails of uint8 images (N, 3, H, W) already in memory."""
    grey = (images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    small = torch.nn.functional.adaptive_avg_pool2d(grey.unsqueeze(1), THUMB)
    return normalise(small.reshape(len(images), -1))


def best_matches(
    queries: torch.Tensor, references: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query thumbnail its best reference: (score float32 (Q,), index int64 (Q,))."""
    if len(references) == 0 or len(queries) == 0:
        return torch.full((len(queries),), -1.0), torch.full((len(queries),), -1)
    scores, index = [], []
    for start in range(0, len(queries), chunk):
        s, i = (queries[start : start + chunk] @ references.T).max(dim=1)
        scores.append(s)
        index.append(i)
    return torch.cat(scores), torch.cat(index)


@dataclass
class NearCopies:
    """What a check found: `found` of `checked` images (of `split`) have a near-copy in
    `against`; `examples`: up to two (image, its copy, score), paths relative to the data."""

    split: str
    against: str
    checked: int
    found: int
    threshold: float
    examples: list[tuple[str, str, float]]

    def record(self) -> dict[str, object]:
        return asdict(self)


def compare(
    split: str,
    against: str,
    query_names: Sequence[str],
    query: torch.Tensor,
    ref_names: Sequence[str],
    ref: torch.Tensor,
    threshold: float = THRESHOLD,
) -> NearCopies:
    """The near-copies of `query` thumbnails among `ref` thumbnails (names for examples)."""
    score, index = best_matches(query, ref)
    hits = (score >= threshold).nonzero().flatten().tolist()
    hits.sort(key=lambda k: -float(score[k]))
    examples = [(query_names[k], ref_names[int(index[k])], round(float(score[k]), 4)) for k in hits]
    return NearCopies(split, against, len(query_names), len(hits), threshold, examples[:2])


def _key(data: LabelledData) -> str:
    h = hashlib.sha256(f"v{_VERSION}|{THRESHOLD}|{THUMB}\n".encode())
    for e in data.entries():
        st = e.path.stat()
        h.update(f"{e.path}|{e.split}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def check_splits(data: LabelledData) -> list[NearCopies]:
    """val and test (where present) against train: one `NearCopies` each (cached)."""
    splits = data.splits()
    if "train" not in splits:
        return []
    path = places.cache_dir() / "near_copies" / f"{_key(data)}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return [NearCopies(**r) for r in json.loads(path.read_text())]
    entries = data.entries()
    by_split = {s: [e for e in entries if e.split == s] for s in splits}
    train = by_split["train"]
    ref = thumbnails([e.path for e in train])
    out = []
    for split in ("val", "test"):
        if split in by_split:
            members = by_split[split]
            query = thumbnails([e.path for e in members])
            names = [e.rel for e in members]
            out.append(compare(split, "train", names, query, [e.rel for e in train], ref))
    with contextlib.suppress(OSError):  # a read-only cache dir must not fail the command
        atomic.write_json(path, [r.record() for r in out])
    return out


def warning(results: Sequence[NearCopies]) -> str | None:
    """One line for the checks that found near-copies (None: none found)."""
    bad = [r for r in results if r.found]
    if not bad:
        return None
    counts = "; ".join(f"{r.found} of {r.checked} {r.split} images" for r in bad)
    examples = [f"{q} ~ {t} ({s:.3f})" for r in bad for q, t, s in r.examples][:2]
    return (
        f"warning: near-copies in {bad[0].against}: {counts} have one (thumbnail correlation "
        f">= {bad[0].threshold}), e.g. {', '.join(examples)}; their accuracy measures memory"
    )


def check_and_warn(data: LabelledData) -> list[dict[str, object]]:
    """`check_splits`, its warning printed (also under --quiet); the records for metrics."""
    from tempo_cli.report.progress import log

    results = check_splits(data)
    line = warning(results)
    if line:
        log(line)
    straddling = data.straddling()
    if straddling:
        g, splits = next(iter(straddling.items()))
        log(
            f"warning: {len(straddling)} group(s) have images in two splits, e.g. {g!r} in "
            f"{' and '.join(splits)}; the split was given ({data.source}): a group in train "
            "and test measures memory"
        )
    return [r.record() for r in results]


def check_against_frames(
    data: LabelledData,
    frames: torch.Tensor,
    split: str = "test",
    against: str = "pre-training frames",
    chunk: int = 4096,
) -> NearCopies:
    """The images of `split` against uint8 frames (N, 3, S, S) already decoded, e.g. a
    pre-training `FrameStore.frames` (thumbnails made `chunk` frames at a time, so a long
    video never holds more than one chunk of them); examples name frames by index."""
    files = data.files(split)
    query = thumbnails(files.paths)
    best = torch.full((len(query),), -1.0)
    where = torch.full((len(query),), -1, dtype=torch.int64)
    for start in range(0, len(frames), chunk):
        score, index = best_matches(query, thumbnails_of(frames[start : start + chunk]))
        better = score > best
        best[better], where[better] = score[better], index[better] + start
    names = [p.relative_to(data.base).as_posix() for p in files.paths]
    hits = sorted((best >= THRESHOLD).nonzero().flatten().tolist(), key=lambda k: -float(best[k]))
    examples = [(names[k], f"frame {int(where[k])}", round(float(best[k]), 4)) for k in hits]
    return NearCopies(split, against, len(names), len(hits), THRESHOLD, examples[:2])
