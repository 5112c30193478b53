"""Frame sources (folders, videos, dataset roots), the decoded-frame cache and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tempo_cli.data import sequences
from tempo_cli.data.frames import list_images, read_image
from tempo_cli.data.pairs import epoch_pairs
from tempo_cli.data.sequences import load_frame_store
from tempo_cli.data.transforms import image_transform, normalize_uint8
from tempo_cli.data.video import decode_video
from tempo_cli.errors import TempoError, UsageError


def _frame(k: int, size: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 (size, size, 3) picture whose mean brightness encodes k."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 40 + 8 * k
    img = np.stack([base + 60 * x, base + 60 * y, np.full_like(x, base + 30 * seed)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_video(path: Path, frames: int, size: int = 64, seed: int = 0) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless: keeps the brightness code readable
        for k in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(_frame(k, size, seed), "rgb24")))
        out.mux(stream.encode())
    return path


def _write_frames(folder: Path, n: int, size: int = 96) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        # names whose sorted order is the frame order; a non-image file to be ignored
        Image.fromarray(_frame(k, size)).save(folder / f"frame_{k:04d}.png")
    (folder / "notes.txt").write_text("ignored")
    (folder / "labels.csv").write_text("ignored")
    return folder


def test_frames_folder_sorted_and_resized(tmp_path: Path) -> None:
    folder = _write_frames(tmp_path / "frames", 7, size=96)
    assert [p.name for p in list_images(folder)] == [f"frame_{k:04d}.png" for k in range(7)]
    store = load_frame_store(folder, 32)
    assert store.frames.shape == (7, 3, 32, 32) and store.frames.dtype == torch.uint8
    assert store.starts == [0] and store.lengths == [7]
    means = store.frames.float().mean(dim=(1, 2, 3))
    assert (means.diff() > 0).all()  # order = sorted file name


def test_equals_reference_resize(tmp_path: Path) -> None:
    """uint8 storage + normalize_uint8 == the reference Resize(128), ToTensor, Normalize."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "sq"
    folder.mkdir()
    for k in range(2):
        noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"{k}.png")
    store = load_frame_store(folder, 128)
    for k, path in enumerate(list_images(folder)):
        img = read_image(path)
        ref = T.PILToTensor()(T.Resize(128)(img))
        assert torch.equal(store.frames[k], ref)
        ref_float = image_transform(128)(img)
        assert torch.allclose(normalize_uint8(store.frames[k : k + 1])[0], ref_float, atol=1e-5)


def test_non_square_center_crop(tmp_path: Path) -> None:
    folder = tmp_path / "wide"
    folder.mkdir()
    img = np.zeros((60, 120, 3), np.uint8)
    img[:, 30:90] = 255  # the central square is white, the sides black
    Image.fromarray(img).save(folder / "a.png")
    store = load_frame_store(folder, 30)
    assert store.frames.shape == (1, 3, 30, 30)
    assert store.frames[0, :, :, 2:-2].min() > 200  # crop kept the centre


def test_dataset_root_and_cache(tmp_path: Path) -> None:
    root = tmp_path / "ASL-like"
    _write_frames(root / "frames", 5, size=64)
    (root / "train" / "A").mkdir(parents=True)  # labelled splits beside frames/ are ignored
    before = sequences.decode_calls
    first = load_frame_store(root, 32)
    assert sequences.decode_calls == before + 1
    second = load_frame_store(root, 32)
    third = load_frame_store(root / "frames", 32)  # same files, same cache
    assert sequences.decode_calls == before + 1  # no decoding the second and third time
    assert torch.equal(first.frames, second.frames) and torch.equal(first.frames, third.frames)
    load_frame_store(root, 16)  # another resolution is another cache entry
    assert sequences.decode_calls == before + 2
    # touching a frame invalidates the cache
    Image.fromarray(_frame(9, 64)).save(root / "frames" / "frame_0000.png")
    changed = load_frame_store(root, 32)
    assert sequences.decode_calls == before + 3
    assert not torch.equal(changed.frames[0], first.frames[0])


def test_memmap_when_over_ram_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_frames(tmp_path / "f", 4, size=32)
    in_ram = load_frame_store(folder, 32)
    assert not in_ram.memmapped
    monkeypatch.setenv("TEMPO_FRAME_RAM_MB", "0")
    mapped = load_frame_store(folder, 32)
    assert mapped.memmapped and torch.equal(mapped.frames, in_ram.frames)
    assert torch.equal(mapped.batch(torch.tensor([3, 0])), in_ram.frames[[3, 0]])


def test_video_file(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.mp4", 20)
    frames = decode_video(video, 32)
    assert frames.shape == (20, 3, 32, 32) and frames.dtype == torch.uint8
    means = frames.float().mean(dim=(1, 2, 3))
    assert (means.diff() > 0).all()  # decoded in order
    store = load_frame_store(video, 32)
    assert store.lengths == [20] and torch.equal(store.frames, frames)


def test_folder_of_videos_is_several_sequences(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_video(folder / "b.mp4", 20, seed=1)
    _write_video(folder / "a.mkv", 13, seed=0)
    (folder / "readme.txt").write_text("ignored")
    store = load_frame_store(folder, 32)
    assert store.names == ["a.mkv", "b.mp4"] and store.lengths == [13, 20]
    assert store.starts == [0, 13]
    seq = store.sequence_ids()
    for pdf, param in [("uniform", 30), ("normal", 50.0)]:  # windows wider than the videos
        for epoch in range(5):
            a, p = epoch_pairs(store, pdf, param, seed=0, epoch=epoch)
            assert (seq[a.numpy()] == seq[p.numpy()]).all(), "a pair crossed videos"


# ---------------------------------------------------------------- errors


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(TempoError, match="not found"):
        load_frame_store(tmp_path / "nope", 32)


def test_folder_without_frames(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(TempoError, match="no frames found"):
        load_frame_store(tmp_path / "empty", 32)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named(tmp_path: Path, damage: str) -> None:
    folder = _write_frames(tmp_path / "frames", 3, size=64)
    bad = folder / "frame_0001.png"
    if damage == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(TempoError, match="frame_0001.png") as e:
        load_frame_store(folder, 32)
    assert "\n" not in str(e.value)
    assert not list((sequences.places.cache_dir() / "frames").glob(".*.tmp"))  # no leftovers


def test_undecodable_video_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_video(folder / "good.mp4", 5)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(TempoError, match="broken.mp4") as e:
        load_frame_store(folder, 32)
    assert "\n" not in str(e.value)
    with pytest.raises(TempoError, match="broken.mp4"):
        decode_video(folder / "broken.mp4", 32)


def test_unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_frames(tmp_path / "frames", 2, size=16)
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(blocker))
    with pytest.raises(TempoError, match="TEMPO_CACHE_DIR"):
        load_frame_store(folder, 16)


def test_bad_image_size(tmp_path: Path) -> None:
    folder = _write_frames(tmp_path / "frames", 2, size=16)
    with pytest.raises(UsageError, match="--image-size"):
        load_frame_store(folder, 0)


def test_not_a_video_file(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    Image.fromarray(_frame(0, 8)).save(f)
    with pytest.raises(TempoError, match="not a video"):
        load_frame_store(f, 32)
