"""A TensorBoard embedding-projector run: `tensorboard --logdir runs` shows it under
PROJECTOR.

`runs/<name>/projector/` holds `projector_config.pbtxt` (one embedding per checkpoint,
written with TensorBoard's own `ProjectorConfig` message), `<checkpoint>/tensors.tsv`
(the features, one image a line), `metadata.tsv` (a header, then label/class/file/group
per image, shared by every checkpoint: the rows are the same images), `sprite.png` (the
images' thumbnails in row-major order) and an empty event file, which is what makes
TensorBoard list the folder as a run. The sprite's thumbnails shrink so the sprite stays
within TensorBoard's 8192 x 8192 pixel limit; below 8 px a thumbnail shows nothing and the
sprite is left out (TensorBoard then draws points).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from tempo_cli import atomic
from tempo_cli.embed.export import file_stem
from tempo_cli.embed.features import Embedding
from tempo_cli.embed.images import ImageSet
from tempo_cli.settings.embed import SPRITE_MAX_SIDE

PROJECTOR_DIR = "projector"
SPRITE_FILE = "sprite.png"
METADATA_TSV = "metadata.tsv"
#: The thumbnail side while the sprite has room (pixels); THUMB_MIN: the least shown.
THUMB_MAX = 64
THUMB_MIN = 8


def sprite_side(n: int) -> int:
    """The thumbnail side for n images: THUMB_MAX, or less so that ceil(sqrt(n)) of them
    fit SPRITE_MAX_SIDE; 0 = no sprite (below THUMB_MIN)."""
    per_row = max(math.ceil(math.sqrt(n)), 1)
    side = min(THUMB_MAX, SPRITE_MAX_SIDE // per_row)
    return side if side >= THUMB_MIN else 0


def sprite_png(thumbs: np.ndarray) -> bytes:
    """uint8 (n, S, S, 3) thumbnails -> the PNG of a square grid, row-major, black fill."""
    n, side = thumbs.shape[0], thumbs.shape[1]
    per_row = max(math.ceil(math.sqrt(n)), 1)
    rows = math.ceil(n / per_row)
    canvas = np.zeros((rows * side, per_row * side, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, per_row)
        canvas[r * side : (r + 1) * side, c * side : (c + 1) * side] = thumbs[i]
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def thumbnails(images: ImageSet, side: int) -> np.ndarray:
    """uint8 (n, side, side, 3): each image resized (shorter side) and center-cropped."""
    from tempo_cli.data.frames import iter_image_chunks

    chunks = [c.permute(0, 2, 3, 1).numpy() for c in iter_image_chunks(images.paths, side)]
    return np.concatenate(chunks)


def _tsv_cell(value: str) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def metadata_tsv(images: ImageSet) -> str:
    """A header line, then one line per image (label, class, file[, group])."""
    header = ["label", "class", "file"] + (["group"] if images.groups is not None else [])
    lines = ["\t".join(header)]
    for i, (name, file) in enumerate(zip(images.label_names, images.files, strict=True)):
        cells = [str(int(images.labels[i])), name, file]
        if images.groups is not None:
            cells.append(images.groups[i])
        lines.append("\t".join(_tsv_cell(c) for c in cells))
    return "\n".join(lines) + "\n"


def features_tsv(features: np.ndarray) -> str:
    """One line per row of features (n, d), tab-separated, float32 round-trip precision."""
    return "".join("\t".join(f"{v:.9g}" for v in row) + "\n" for row in features.tolist())


def write_projector(folder: Path, images: ImageSet, embeddings: list[Embedding]) -> Path:
    """The projector run under `folder` (module docstring); returns the config file."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / METADATA_TSV, metadata_tsv(images))
    side = sprite_side(len(images))
    if side:
        atomic.write_bytes(folder / SPRITE_FILE, sprite_png(thumbnails(images, side)))
    config = ProjectorConfig()
    for emb in embeddings:
        tensor = f"{file_stem(emb.label)}/tensors.tsv"
        atomic.write_text(folder / tensor, features_tsv(emb.features))
        entry = config.embeddings.add()
        entry.tensor_name = emb.label
        entry.tensor_path = tensor
        entry.tensor_shape.extend(emb.features.shape)
        entry.metadata_path = METADATA_TSV
        if side:
            entry.sprite.image_path = SPRITE_FILE
            entry.sprite.single_image_dim.extend([side, side])
    config_path = folder / "projector_config.pbtxt"
    atomic.write_text(config_path, text_format.MessageToString(config))
    _touch_event_file(folder)
    return config_path


def _touch_event_file(folder: Path) -> None:
    """An event file with no records: TensorBoard lists a folder as a run only with one."""
    if any(folder.glob("events.out.tfevents.*")):
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    writer.flush()
    writer.close()
