"""Folders of images: the frames of one video (sorted by file name) and labelled photos."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from tempo_cli.data.transforms import BILINEAR, InterpolationMode, to_uint8_tensor
from tempo_cli.errors import TempoError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

# PIL decoding and resizing release the GIL, so a few threads speed up large folders.
_THREADS = min(8, os.cpu_count() or 1)
_CHUNK = 256  # images decoded per batch: bounds memory held by finished-but-unwritten frames


def is_image(path: Path) -> bool:
    """A regular, non-hidden file with an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".") and path.is_file()


def list_images(folder: str | Path) -> list[Path]:
    """The image files in `folder`, sorted by file name (the frame order of SPEC.md).

    `.txt` files and anything else that is not an image are ignored; so are sub-folders.
    Raises TempoError if the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TempoError(f"folder not found: {folder}; check --data (or run `tempo download`)")
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image as PIL RGB.

    A missing, truncated or corrupt file raises TempoError naming the file, so a bad frame
    deep in a folder fails with one clear line instead of a PIL traceback mid-epoch.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) on some damaged files; make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
    except FileNotFoundError:
        raise TempoError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Warning) as e:
        raise TempoError(
            f"cannot read image {path} ({type(e).__name__}: {e}); replace or delete the file"
        ) from None


def load_uint8(
    path: str | Path, size: int | None, interpolation: InterpolationMode = BILINEAR
) -> torch.Tensor:
    """One image file -> uint8 (3, S, S) (see transforms.to_uint8_tensor)."""
    return to_uint8_tensor(read_image(path), size, interpolation)


def iter_image_chunks(
    paths: Sequence[Path],
    size: int | None,
    on_chunk: Callable[[int], None] | None = None,
    interpolation: InterpolationMode = BILINEAR,
):
    """Yield uint8 (n, 3, S, S) tensors for `paths` in order, `_CHUNK` images at a time.

    Decoding uses a small thread pool; only one chunk is materialised at a time, so a
    folder of any length can be streamed into a disk cache with bounded memory.
    `on_chunk(n)` is called after each chunk (progress bars); `interpolation` of the resize.
    """
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            images = list(pool.map(lambda p: load_uint8(p, size, interpolation), chunk))
            shapes = {tuple(t.shape) for t in images}
            if len(shapes) > 1:
                raise TempoError(
                    f"images in {chunk[0].parent} have different sizes {sorted(shapes)}; "
                    "pass --image-size to resize them to one size"
                )
            if on_chunk is not None:
                on_chunk(len(chunk))
            yield torch.stack(images)
