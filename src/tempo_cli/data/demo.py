"""The built-in offline `demo` dataset: a synthetic "signer" video plus labelled stills.

Layout (the ASL-big / ASL_mask layouts of SPEC.md), under `places.data_dir()`:

    demo/frames/000000.png ...        the video's frames, sorted name = time order
    demo/demo.mp4                     the video the frames were cut from (same pixels, H.264)
    demo/{train,train-1,train-5,train-10,train-15,train-20,val,test}/<LETTER>/<ID>.png
    demo/masks/gtFine/test/<ID>_gtFine_{color,labelIds,instanceIds}.png
    demo/masks/imgsFine/leftImg8bit/test/<ID>_leftImg8bit.png
    demo/.tempo-demo.json             marker: generator version, seed, config (written last)
    demo_mask/annotations/instances_{Train,Test}.json   COCO instances, RLE masks
    demo_mask/images/<ID>.png

The video goes through the 24 letters in a fresh random order per pass, `frames_per_letter`
frames each. Each frame's nuisance state is `keep * previous + (1 - keep) * fresh`, so
neighbouring frames are nearly equal while pose, colours and clutter decorrelate within a
few frames and nothing in the scene tracks time (see ../shared/DEMO_NOTES.md for why).
Labelled images are rendered independently from the same (stationary) distribution; `val`
(for choosing settings without looking at `test`) has image IDs of its own, like every split.

Generation is deterministic per seed (byte-identical PNGs) and atomic: everything is built
in a temporary folder beside the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tempo_cli import places
from tempo_cli.data import ASL_LETTERS as LETTERS  # class index = position (SPEC.md)
from tempo_cli.data.demo_render import chain_state, fresh_state, mix_states, render
from tempo_cli.errors import TempoError
from tempo_cli.report.progress import log

# Bump when the generator's output changes: an existing demo with another version is rebuilt.
# (2: bigger signs than the first draft, which learned too slowly at 32 px. 3: a `val`
# split, drawn from a stream of its own: the other splits' pixels are those of version 2.)
GENERATOR_VERSION = 3
# Mixed into every seed; kept apart from the version so bumping it alone keeps the pixels.
_SEED_SALT = 1

DEMO_NAME = "demo"
DEMO_MASK_NAME = "demo_mask"
MARKER = ".tempo-demo.json"
_BUILD_PREFIX = ".demo-build-"
_TRASH_PREFIX = ".demo-trash-"

# Cityscapes-style hand masks: the colour the reference's masks use for hand pixels.
MASK_COLOR = (228, 0, 168)
MASK_LABEL_ID = 1  # _gtFine_labelIds.png: 0 background, 1 sign ("hand")
# _gtFine_instanceIds.png (16-bit): Cityscapes encodes instances as label_id * 1000 + k.
MASK_INSTANCE_ID = MASK_LABEL_ID * 1000

TRAIN_SUBSETS = (1, 5, 10, 15, 20)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults are the product's `demo`; `small()` is for tests."""

    image_size: int = 64
    passes: int = 4
    frames_per_letter: int = 40
    keep: float = 0.5  # share of the previous frame's nuisance state kept per frame
    train_per_class: int = 30
    test_per_class: int = 20
    val_per_class: int = 10  # 0: no val/ folder
    mask_image_size: int = 96
    mask_train: int = 96
    mask_test: int = 48
    fps: int = 25

    @classmethod
    def small(cls) -> DemoConfig:
        """A quick, complete demo (all splits present) for tests of the generator itself."""
        return cls(
            passes=1, frames_per_letter=3, train_per_class=2, test_per_class=1,
            val_per_class=1, mask_train=6, mask_test=3,
        )  # fmt: skip


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams per part, so that resizing one part never changes another.

    Child k of a SeedSequence depends only on (seed, k), so a new part goes at the END of
    `parts`: the earlier parts keep their streams (and their pixels).
    """
    parts = ("video", "train", "test", "mask_train", "mask_test", "val")
    children = np.random.SeedSequence([seed, _SEED_SALT]).spawn(len(parts))
    return {p: np.random.default_rng(c) for p, c in zip(parts, children, strict=True)}


def _save_png(img: Image.Image, path: Path) -> None:
    # Fixed settings (no optimize) so the same pixels always give the same bytes.
    img.save(path, format="PNG", compress_level=6)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (same bytes, no new data: creating files is the slow part of generation
    on a busy disk), else copy where the file system has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class _Writer:
    """Writes PNGs on a thread pool while the main thread renders.

    Creating thousands of small files is bound by file-system latency, not CPU (measured on
    a busy 2-core machine: ~7 ms per file serially, ~2 ms with 16 threads), so writes
    overlap. Rendering and all random draws stay on the main thread, in order, so the
    output does not depend on thread timing.
    """

    def __init__(self, workers: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-png")
        self._futures: list[Future[None]] = []

    def png(self, img: Image.Image, path: Path, links: Iterable[Path] = ()) -> None:
        """Save `img` at `path`, then hard-link it at each of `links`."""

        def task(links: tuple[Path, ...] = tuple(links)) -> None:
            _save_png(img, path)
            for link in links:
                _link_or_copy(path, link)

        self._futures.append(self._pool.submit(task))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # On an error, drop queued writes (the build folder is deleted anyway).
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        if exc_type is None:
            for f in self._futures:
                f.result()  # re-raise the first failed write


def _letter_sequence(rng: np.random.Generator, passes: int) -> list[int]:
    """Class index per stretch: each pass a fresh permutation of the 24 letters, never the
    same letter twice in a row across a pass boundary (that would double a stretch)."""
    order: list[int] = []
    for _ in range(passes):
        perm = [int(i) for i in rng.permutation(len(LETTERS))]
        if order and perm[0] == order[-1]:
            perm[0], perm[-1] = perm[-1], perm[0]
        order += perm
    return order


def _write_video(frames: list[Image.Image], path: Path, fps: int) -> None:
    """H.264 (yuv420p, the format every player and decoder reads) at crf 10: decoded frames
    are close to the PNGs (chroma subsampling makes them not bit-equal)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        # One thread: x264's output then depends only on its input (reproducible files).
        stream.options = {"crf": "10", "preset": "veryfast", "threads": "1"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_video_part(
    root: Path, cfg: DemoConfig, rng: np.random.Generator, writer: _Writer
) -> None:
    frames_dir = root / "frames"
    frames_dir.mkdir(parents=True)
    frames: list[Image.Image] = []
    state = fresh_state(rng)
    n = 0
    for cls in _letter_sequence(rng, cfg.passes):
        for _ in range(cfg.frames_per_letter):
            state = mix_states(state, fresh_state(rng), cfg.keep)
            img, _mask = render(LETTERS[cls], state, cfg.image_size)
            writer.png(img, frames_dir / f"{n:06d}.png")
            frames.append(img)
            n += 1
    _write_video(frames, root / f"{DEMO_NAME}.mp4", cfg.fps)


def _labelled_state(rng: np.random.Generator, keep: float) -> np.ndarray:
    # 8 mixing steps: the chain's memory is keep**8 (0.4 % at keep 0.5), i.e. stationary.
    return chain_state(rng, steps=8, keep=keep)


def _write_labelled_part(
    root: Path, cfg: DemoConfig, rngs: dict[str, np.random.Generator], writer: _Writer
) -> None:
    """train (+ nested train-N copies), val, test, and Cityscapes masks for test."""
    gt_dir = root / "masks" / "gtFine" / "test"
    left_dir = root / "masks" / "imgsFine" / "leftImg8bit" / "test"
    gt_dir.mkdir(parents=True)
    left_dir.mkdir(parents=True)
    # Each split draws from its own stream, so their order here does not matter.
    splits = (
        ("train", cfg.train_per_class),
        ("val", cfg.val_per_class),
        ("test", cfg.test_per_class),
    )
    for split, per_class in splits:
        if per_class == 0 and split == "val":
            continue  # no empty split folder: readers reject a split without images
        rng = rngs[split]
        for letter in LETTERS:
            class_dir = root / split / letter
            class_dir.mkdir(parents=True)
            if split == "train":
                # With fewer than N per class (small test configs) train-N holds them all.
                for n in TRAIN_SUBSETS:
                    (root / f"train-{n}" / letter).mkdir(parents=True)
            for k in range(per_class):
                # IDs are unique over the whole dataset: the masks folder is flat.
                image_id = f"{split}_{letter}_{k:03d}"
                img, mask = render(letter, _labelled_state(rng, cfg.keep), cfg.image_size)
                path = class_dir / f"{image_id}.png"
                if split == "train":
                    # train-N holds the first N of each class: train-1 ⊂ train-5 ⊂ ... ⊂ train.
                    subsets = [
                        root / f"train-{n}" / letter / path.name for n in TRAIN_SUBSETS if k < n
                    ]
                    writer.png(img, path, subsets)
                elif split == "val":
                    writer.png(img, path)
                else:
                    writer.png(img, path, [left_dir / f"{image_id}_leftImg8bit.png"])
                    _write_cityscapes_mask(gt_dir, image_id, mask, writer)


def _write_cityscapes_mask(gt_dir: Path, image_id: str, mask: np.ndarray, writer: _Writer) -> None:
    """The three gtFine PNGs of one test image (its leftImg8bit is a link to the image)."""
    color = np.zeros((*mask.shape, 3), dtype=np.uint8)
    color[mask] = MASK_COLOR
    writer.png(Image.fromarray(color, "RGB"), gt_dir / f"{image_id}_gtFine_color.png")
    label = (mask * MASK_LABEL_ID).astype(np.uint8)
    writer.png(Image.fromarray(label, "L"), gt_dir / f"{image_id}_gtFine_labelIds.png")
    inst = (mask * MASK_INSTANCE_ID).astype(np.uint16)  # Pillow: 16-bit grey ("I;16")
    writer.png(Image.fromarray(inst), gt_dir / f"{image_id}_gtFine_instanceIds.png")


def _write_coco_part(
    root: Path, cfg: DemoConfig, rngs: dict[str, np.random.Generator], writer: _Writer
) -> None:
    """demo_mask: COCO instances (one sign per image, RLE mask) like ASL_mask."""
    from pycocotools import mask as mask_utils

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir(parents=True)
    categories = [
        {"id": i + 1, "name": letter, "supercategory": "sign"} for i, letter in enumerate(LETTERS)
    ]
    image_id = 0
    ann_id = 0
    for split, count, rng in (
        ("Train", cfg.mask_train, rngs["mask_train"]),
        ("Test", cfg.mask_test, rngs["mask_test"]),
    ):
        images, annotations = [], []
        for k in range(count):
            cls = k % len(LETTERS)  # balanced classes
            image_id += 1
            ann_id += 1
            file_name = f"{split.lower()}_{k:04d}.png"
            img, mask = render(LETTERS[cls], _labelled_state(rng, cfg.keep), cfg.mask_image_size)
            writer.png(img, root / "images" / file_name)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            area = float(mask_utils.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            w, h = img.size
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
        coco = {
            "info": {"description": f"tempo demo_mask ({split})", "version": GENERATOR_VERSION},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco) + "\n")


def _marker(seed: int, cfg: DemoConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "config": asdict(cfg)}


def generate_demo(root_parent: Path, seed: int, config: DemoConfig | None = None) -> float:
    """Write `demo/` and `demo_mask/` into the (existing, empty) folder `root_parent`.

    Not atomic by itself: `ensure_demo` calls it on a temporary folder. The marker file is
    written last. Returns the seconds it took.
    """
    cfg = config or DemoConfig()
    start = time.perf_counter()
    rngs = _rngs(seed)
    demo = Path(root_parent) / DEMO_NAME
    with _Writer() as writer:
        _write_video_part(demo, cfg, rngs["video"], writer)
        _write_labelled_part(demo, cfg, rngs, writer)
        _write_coco_part(Path(root_parent) / DEMO_MASK_NAME, cfg, rngs, writer)
    seconds = time.perf_counter() - start
    marker = json.dumps({**_marker(seed, cfg), "generated_in_s": round(seconds, 2)}, indent=2)
    (Path(root_parent) / DEMO_MASK_NAME / MARKER).write_text(marker + "\n")
    (demo / MARKER).write_text(marker + "\n")
    return seconds


def read_marker(root: Path) -> dict | None:
    """The marker of a generated `demo/` (or `demo_mask/`) folder; None if absent/corrupt."""
    try:
        marker = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_complete(data_dir: Path, seed: int, cfg: DemoConfig) -> bool:
    want = _marker(seed, cfg)
    for name in (DEMO_NAME, DEMO_MASK_NAME):
        marker = read_marker(data_dir / name)
        # Extra keys (the timing) do not matter; version, seed and config must match.
        if marker is None or any(marker.get(k) != v for k, v in want.items()):
            return False
    return True


@contextlib.contextmanager
def _build_lock(data_dir: Path) -> Iterator[None]:
    """Serialise builders (e.g. several torchrun ranks on one machine). POSIX only; where
    fcntl is missing the build is still atomic, concurrent builders just duplicate work."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(data_dir / ".demo.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move `src` onto `dst`, replacing any existing folder (renamed aside, then deleted)."""
    if dst.exists() or dst.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=_TRASH_PREFIX, dir=dst.parent))
        os.replace(dst, trash / dst.name)
        _remove_tree(trash)
    os.replace(src, dst)


def ensure_demo(
    seed: int = 0, force: bool = False, quiet: bool = True, config: DemoConfig | None = None
) -> Path:
    """Return `places.data_dir()/"demo"`, generating it (and `demo_mask/`) if needed.

    A no-op when both folders carry the marker of this generator version, seed and config;
    otherwise (or with `force=True`) builds everything in a temporary folder beside them and
    renames it into place, so an interrupted run never leaves a half dataset under the real
    names. Leftover temporary folders of interrupted runs are removed.
    """
    cfg = config or DemoConfig()
    data_dir = places.data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TempoError(
            f"cannot create the data directory {data_dir}: {e}; set TEMPO_DATA_DIR"
        ) from e
    target = data_dir / DEMO_NAME
    if not force and _is_complete(data_dir, seed, cfg):
        return target
    with _build_lock(data_dir):
        # Another process may have finished the build while we waited for the lock.
        if not force and _is_complete(data_dir, seed, cfg):
            return target
        # Under the lock no other builder runs, so any build/trash folder is a leftover.
        for stale in data_dir.iterdir():
            if stale.is_dir() and stale.name.startswith((_BUILD_PREFIX, _TRASH_PREFIX)):
                _remove_tree(stale)
        log(f"generating the demo dataset in {data_dir} (seed {seed}) ...", quiet)
        build = Path(tempfile.mkdtemp(prefix=_BUILD_PREFIX, dir=data_dir))
        try:
            seconds = generate_demo(build, seed, cfg)
            # demo_mask first, demo (the folder callers look for) last: until demo is in
            # place, _is_complete is False and the next call rebuilds both.
            _replace_dir(build / DEMO_MASK_NAME, data_dir / DEMO_MASK_NAME)
            _replace_dir(build / DEMO_NAME, target)
        except OSError as e:
            raise TempoError(f"could not write the demo dataset in {data_dir}: {e}") from e
        finally:
            _remove_tree(build)
    log(f"demo dataset ready: {target} ({seconds:.1f} s)", quiet)
    return target
