"""Video files decoded with PyAV, frame by frame, at training resolution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from tempo_cli.data.transforms import to_uint8_tensor
from tempo_cli.errors import TempoError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_CHUNK = 256  # frames per yielded tensor


def is_video(path: Path) -> bool:
    """A regular, non-hidden file with a video extension (case-insensitive)."""
    return path.suffix.lower() in VIDEO_EXTS and not path.name.startswith(".") and path.is_file()


def iter_video_chunks(path: str | Path, image_size: int | None) -> Iterator[torch.Tensor]:
    """Yield uint8 (n, 3, S, S) tensors of consecutive frames of the first video stream.

    Frames go through the same resize + center crop as image folders
    (transforms.to_uint8_tensor), so a video and the frames cut from it give the same
    tensors. Streaming keeps memory bounded for long videos. Any decoding failure raises
    TempoError naming the file.
    """
    import av  # imported here: PyAV loads FFmpeg, which only video inputs need

    path = Path(path)
    if not path.is_file():
        raise TempoError(f"video not found: {path}")
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise TempoError(f"no video stream in {path}; is it a video file?")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame/slice threads inside FFmpeg
            chunk: list[torch.Tensor] = []
            for frame in container.decode(stream):
                chunk.append(to_uint8_tensor(frame.to_image(), image_size))
                if len(chunk) == _CHUNK:
                    n += len(chunk)
                    yield torch.stack(chunk)
                    chunk = []
            if chunk:
                n += len(chunk)
                yield torch.stack(chunk)
    except TempoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise TempoError(
            f"cannot decode video {path} ({type(e).__name__}: {e}); "
            "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it"
        ) from None
    if n == 0:
        raise TempoError(f"video {path} has no decodable frames; re-encode it or remove it")


def decode_video(path: str | Path, image_size: int | None) -> torch.Tensor:
    """All frames of a video -> uint8 (T, 3, S, S). TempoError if it cannot be decoded."""
    return torch.cat(list(iter_video_chunks(path, image_size)))
