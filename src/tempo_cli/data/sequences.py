"""All frames of all training sequences in one uint8 tensor, decoded once and cached.

`--data` for pre-training may be a dataset root holding `frames/` (the ASL layout), a
folder of images (one video's frames, sorted by name), a video file, or a folder of
video files (one sequence each). Every frame is decoded once, resized to the training
resolution and written as raw uint8 to `places.cache_dir()/frames/`; later loads read
that file and never decode again. When the frames exceed a RAM budget
(`TEMPO_FRAME_RAM_MB`, default 2048) the cache file is memory-mapped instead of read, so
memory stays bounded for long videos (the OS page cache does the rest).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tempo_cli import places
from tempo_cli.atomic import atomic_path, write_json
from tempo_cli.data.frames import is_image, iter_image_chunks, list_images
from tempo_cli.data.video import VIDEO_EXTS, is_video, iter_video_chunks
from tempo_cli.errors import TempoError, UsageError

CACHE_VERSION = 1
DEFAULT_RAM_MB = 2048

# Number of source files (image folders or videos) decoded by this process. Tests read it
# to prove that a second load comes from the cache.
decode_calls = 0


@dataclass
class FrameStore:
    """Frames of every sequence, concatenated.

    frames: uint8 (N, 3, S, S); may be backed by a read-only-on-disk memmap (copy-on-write).
    starts[k], lengths[k]: sequence k occupies frames[starts[k] : starts[k] + lengths[k]].
    names[k]: where sequence k came from (file or folder name), for messages.
    Pairs are only ever drawn within one sequence (data.pairs).
    """

    frames: torch.Tensor
    starts: list[int]
    lengths: list[int]
    names: list[str] = field(default_factory=list)
    memmapped: bool = False

    def __post_init__(self) -> None:
        if len(self.starts) != len(self.lengths):
            raise ValueError("starts and lengths must have the same length")
        if sum(self.lengths) != len(self.frames):
            raise ValueError(f"lengths sum to {sum(self.lengths)}, frames has {len(self.frames)}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[-1])

    def sequence_ids(self) -> np.ndarray:
        """int64 (N,): the sequence index of every frame."""
        return np.repeat(np.arange(self.num_sequences, dtype=np.int64), self.lengths)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Global frame indices (B,) -> uint8 (B, 3, S, S) (a copy; safe to pin or move)."""
        return self.frames[indices]


def ram_budget_bytes() -> int:
    """Bytes of decoded frames held in RAM before switching to a memmap."""
    value = os.environ.get("TEMPO_FRAME_RAM_MB", str(DEFAULT_RAM_MB))
    try:
        mb = float(value)
    except ValueError:
        msg = f"TEMPO_FRAME_RAM_MB must be a number of megabytes, got {value!r}"
        raise TempoError(msg) from None
    return int(mb * 2**20)


def find_sequences(source: str | Path) -> tuple[str, list[Path]]:
    """Classify `source`: ("images", [folder]) or ("videos", [file, ...]).

    Order of precedence: a video file; a folder with `frames/` (ASL layout; `frames/` is
    then classified the same way); a folder with images (one sequence, even if videos sit
    beside them, as the demo's video does); a folder of videos (one sequence each, sorted).
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise TempoError(f"data not found: {source}; check --data (or run `tempo download asl`)")
    if source.is_file():
        if is_video(source):
            return "videos", [source]
        raise TempoError(
            f"{source} is not a video ({', '.join(VIDEO_EXTS)}) nor a folder of frames"
        )
    if (source / "frames").is_dir():
        return find_sequences(source / "frames")
    entries = sorted(source.iterdir(), key=lambda p: p.name)
    if any(is_image(p) for p in entries):
        return "images", [source]
    videos = [p for p in entries if is_video(p)]
    if videos:
        return "videos", videos
    raise TempoError(
        f"no frames found in {source}: expected a frames/ folder, image files or video files "
        f"({', '.join(VIDEO_EXTS)})"
    )


def _fingerprint(kind: str, sources: list[Path], image_size: int) -> tuple[str, list[Path]]:
    """Cache key over the source paths, their mtimes and sizes, and the resolution.

    Returns (hex key, the files the frames come from). Editing, adding or removing any
    frame or video changes the key, so a stale cache is never used.
    """
    files = list_images(sources[0]) if kind == "images" else sources
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{kind}|{image_size}|".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_mtime_ns}|{st.st_size}\n".encode())
    return h.hexdigest()[:32], files


def _open_cached(raw: Path, meta: dict, image_size: int) -> tuple[torch.Tensor, bool]:
    """Read (or memory-map) a cache file -> (uint8 (N, 3, S, S), memmapped)."""
    shape = (sum(meta["lengths"]), 3, image_size, image_size)
    nbytes = int(np.prod(shape))
    if raw.stat().st_size != nbytes:
        raise ValueError("cache file has the wrong size")
    if nbytes <= ram_budget_bytes():
        array = np.fromfile(raw, dtype=np.uint8).reshape(shape)
        return torch.from_numpy(array), False
    # "c" = copy-on-write: the tensor is writable in-process (torch wants that) but the
    # file is never modified; pages are read lazily and may be dropped by the OS.
    array = np.memmap(raw, dtype=np.uint8, mode="c", shape=shape)
    return torch.from_numpy(array), True


def _decode_to_cache(
    source: str | Path,
    kind: str,
    sources: list[Path],
    files: list[Path],
    image_size: int,
    raw: Path,
    meta_path: Path,
    quiet: bool,
) -> dict:
    """Decode every sequence into `raw` (atomically), then write `meta_path` -> the meta dict."""
    global decode_calls
    # Decode straight into the cache file, one chunk at a time: memory stays bounded no
    # matter how long the videos are. The meta file is written last, so a cache without
    # it (interrupted run) is never read.
    from tempo_cli.report.progress import ProgressBar

    groups = [(sources[0], files)] if kind == "images" else [(v, [v]) for v in sources]
    starts: list[int] = []
    lengths: list[int] = []
    names: list[str] = []
    total = 0
    frame_bytes = 3 * image_size * image_size
    raw.parent.mkdir(parents=True, exist_ok=True)
    bar_total = len(files) if kind == "images" else None
    desc = f"decoding frames of {Path(source).name}"
    with ProgressBar(bar_total, desc, quiet=quiet) as bar, atomic_path(raw) as tmp:
        with open(tmp, "wb") as out:
            for seq_source, seq_files in groups:
                decode_calls += 1
                if kind == "images":
                    chunks = iter_image_chunks(seq_files, image_size, on_chunk=bar.advance)
                else:
                    chunks = iter_video_chunks(seq_source, image_size)
                n = 0
                for chunk in chunks:
                    out.write(chunk.numpy().tobytes())
                    n += len(chunk)
                    if kind == "videos":
                        bar.advance(len(chunk))
                starts.append(total)
                lengths.append(n)
                names.append(seq_source.name)
                total += n
            out.flush()
            os.fsync(out.fileno())
        if tmp.stat().st_size != total * frame_bytes:
            raise TempoError(f"frame cache for {source} came out the wrong size; try again")
    meta = {
        "version": CACHE_VERSION,
        "source": str(Path(source).resolve()),
        "image_size": image_size,
        "starts": starts,
        "lengths": lengths,
        "names": names,
    }
    write_json(meta_path, meta)
    return meta


def load_frame_store(source: str | Path, image_size: int, quiet: bool = True) -> FrameStore:
    """Frames of `source` at `image_size` -> FrameStore (decoded on the first call only).

    source: a dataset root holding frames/, a folder of images, a video file, or a folder
    of video files. Frames: shorter side resized to image_size, center-cropped square.
    Errors (missing folder, no frames, corrupt image, undecodable video) raise TempoError
    naming the file.
    """
    if image_size < 1:
        raise UsageError("--image-size", image_size, "a positive number of pixels")
    kind, sources = find_sequences(source)
    key, files = _fingerprint(kind, sources, image_size)
    if kind == "images" and not files:
        raise TempoError(f"no image files in {sources[0]}")
    cache = places.cache_dir() / "frames"
    raw, meta_path = cache / f"{key}.u8", cache / f"{key}.json"

    if meta_path.is_file() and raw.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            frames, mm = _open_cached(raw, meta, image_size)
            return FrameStore(frames, meta["starts"], meta["lengths"], meta["names"], mm)
        except (ValueError, KeyError, OSError, json.JSONDecodeError):
            pass  # a damaged cache is rebuilt below

    try:
        meta = _decode_to_cache(source, kind, sources, files, image_size, raw, meta_path, quiet)
    except OSError as e:  # disk full, read-only cache dir, ...; decode errors are TempoError
        raise TempoError(
            f"cannot write the frame cache in {cache} ({e}); free space or set TEMPO_CACHE_DIR"
        ) from None
    frames, mm = _open_cached(raw, meta, image_size)
    return FrameStore(frames, meta["starts"], meta["lengths"], meta["names"], mm)
