"""Labelled splits (train, train-N, test), class index, dataset names, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.labelled import (
    ASL_LETTERS,
    LabelledImages,
    available_splits,
    class_index,
    class_names,
    list_split,
    load_split,
    split_name,
)
from tempo_cli.data.transforms import NEAREST, normalize
from tempo_cli.errors import TempoError, UsageError


def _image(path: Path, value: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _asl_like(root: Path, letters: str = "ACY", per_class: int = 2) -> Path:
    for split, n in [("train", per_class), ("train-1", 1), ("test", per_class)]:
        for k, letter in enumerate(letters):
            for m in range(n):
                _image(root / split / letter / f"{m}.png", 10 * k + m)
    return root


def test_asl_sample_real_photos(asl_sample: Path) -> None:
    split = load_split(asl_sample, "test", 64)
    assert split.images.shape == (120, 3, 64, 64) and split.images.dtype == torch.uint8
    assert split.class_names == list(ASL_LETTERS) and split.num_classes == 24
    assert torch.equal(torch.bincount(split.labels, minlength=24), torch.full((24,), 5))
    for path, label in zip(split.paths, split.labels.tolist(), strict=True):
        assert path.parent.name == ASL_LETTERS[label]  # folder letter -> index in the string
    x, y = LabelledImages(split)[7]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == split.labels[7]
    assert available_splits(asl_sample) == ["test"]  # gtFine/ is not a split


def test_asl_index_is_the_letter_position(tmp_path: Path) -> None:
    root = _asl_like(tmp_path / "asl")
    assert available_splits(root) == ["train", "train-1", "test"]
    assert class_names(root) == list(ASL_LETTERS)  # a subset of letters keeps the 24-index
    split = load_split(root, split_name(1), 16)
    assert split.labels.tolist() == [0, 2, 23]  # A, C, Y
    assert split.images.shape == (3, 3, 16, 16)
    full = load_split(root, split_name(None), None)  # native size
    assert full.images.shape == (6, 3, 40, 40)


def test_other_dataset_sorted_folder_names(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _image(root / "train" / "dog" / "1.png", 1)
    _image(root / "train" / "cat" / "1.png", 2)
    _image(root / "test" / "eel" / "1.png", 3)
    assert class_names(root) == ["cat", "dog", "eel"]
    assert load_split(root, "train", 8).labels.tolist() == [0, 1]
    assert load_split(root, "test", 8).labels.tolist() == [2]


def test_split_matched_in_any_case_and_named_by_its_folder(tmp_path: Path) -> None:
    """`test` finds `Test/` (as explain always did); hidden folders are no classes."""
    root = tmp_path / "masks-style"
    _image(root / "Test" / "B" / "1.png", 1)
    _image(root / "Test" / "A" / "1.png", 2)
    _image(root / "Test" / ".cache" / "1.png", 3)
    split = load_split(root, "test", 8)
    assert split.split == "Test" and split.root == root
    assert split.label_names == ["A", "B"] and split.present_classes == ["A", "B"]
    assert split.labels.tolist() == [0, 1] and split.class_names == list(ASL_LETTERS)
    assert split.ids == ["1", "1"]
    assert torch.equal(split.pixels(), split.images.float() / 255.0)
    # the explain commands name their own option
    with pytest.raises(UsageError, match="--split"):
        list_split(root, "train-7", option="--split")


def test_class_index_rule() -> None:
    assert class_index(["C", "A"]) == list(ASL_LETTERS)
    assert class_index(["dog", "cat"]) == ["cat", "dog"]
    assert class_index(["A", "dog"]) == ["A", "dog"]
    assert class_index([]) == []


def test_class_names_of_a_head() -> None:
    """The head's names: recorded ones, else the data's rule if it fits, else ASL for 24."""
    from tempo_cli.models.classifier import head_class_names

    assert head_class_names(2, ["x", "y"], ["A"]) == ["x", "y"]
    assert head_class_names(24) == list(ASL_LETTERS)  # a reference checkpoint
    assert head_class_names(24, None, ["A", "C"]) == list(ASL_LETTERS)
    assert head_class_names(2, None, ["C", "A"]) == ["A", "C"]  # the split's folders
    assert head_class_names(3, None, ["dog", "cat", "eel"]) == ["cat", "dog", "eel"]
    assert head_class_names(5, None, ["dog", "cat"]) is None
    assert head_class_names(5) is None


def test_nearest_resize_and_one_normalize(tmp_path: Path) -> None:
    """The one loader resizes bilinear (evaluation) or NEAREST (explain); `normalize` takes
    uint8 or [0, 1] floats and equals the reference's Normalize(ToTensor(img))."""
    from PIL import Image as PILImage
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    (tmp_path / "test" / "A").mkdir(parents=True)
    PILImage.fromarray(array).save(tmp_path / "test" / "A" / "0.png")
    image = PILImage.fromarray(array)
    for mode, resample in ((NEAREST, PILImage.Resampling.NEAREST), (None, None)):
        kw = {} if mode is None else {"interpolation": mode}
        got = load_split(tmp_path, "test", 20, **kw).images[0]
        ref = image.resize((30, 20), resample) if resample is not None else T.Resize(20)(image)
        ref = T.CenterCrop(20)(ref)
        assert torch.equal(got, torch.from_numpy(np.array(ref)).permute(2, 0, 1))
    x = load_split(tmp_path, "test", 20).images
    reference = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x[0] / 255.0)
    assert torch.allclose(normalize(x)[0], reference, atol=1e-6)
    pixels = (x.float() / 255.0).requires_grad_(True)
    assert torch.equal(normalize(pixels), normalize(x))
    normalize(pixels).sum().backward()  # the attacks differentiate through it
    assert pixels.grad is not None


def test_unknown_split_names_available(tmp_path: Path) -> None:
    root = _asl_like(tmp_path / "asl")
    with pytest.raises(UsageError, match="--samples-pc") as e:
        load_split(root, split_name(7), 16)
    assert "1" in str(e.value) and "train-1" in str(e.value)
    with pytest.raises(UsageError, match="val"):
        load_split(root, "val", 16)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(TempoError, match="not found"):
        load_split(tmp_path / "nope", "test", 16)


def test_empty_split(tmp_path: Path) -> None:
    root = tmp_path / "asl"
    (root / "test" / "A").mkdir(parents=True)
    (root / "test" / "A" / "readme.txt").write_text("no images here")
    with pytest.raises(TempoError, match="no images"):
        load_split(root, "test", 16)


def test_corrupt_labelled_image_is_named(tmp_path: Path) -> None:
    root = _asl_like(tmp_path / "asl")
    (root / "test" / "C" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(TempoError, match=r"C/1\.png") as e:
        load_split(root, "test", 16)
    assert "\n" not in str(e.value)


def test_resolve_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dataset(tmp_path) == tmp_path
    assert resolve_dataset(str(tmp_path)) == tmp_path
    monkeypatch.setenv("TEMPO_DATA_DIR", str(tmp_path / "data"))  # not the session's data dir
    (tmp_path / "data" / "ASL-big").mkdir(parents=True)
    assert resolve_dataset("asl") == tmp_path / "data" / "ASL-big"
    assert resolve_dataset("ASL-big") == tmp_path / "data" / "ASL-big"
    with pytest.raises(TempoError, match="tempo download asl"):
        resolve_dataset("no-such-dataset")
    with pytest.raises(TempoError, match="not found"):
        resolve_dataset(str(tmp_path / "missing" / "dir"))


@pytest.mark.slow
def test_demo_dataset_through_the_data_layer(demo_root: Path) -> None:
    """`--data demo` resolves to the generated demo, whose frames and splits load."""
    from tempo_cli.data.sequences import load_frame_store

    assert resolve_dataset("demo") == demo_root
    store = load_frame_store(demo_root, 32)  # frames/ wins over the demo video beside it
    assert store.num_sequences == 1 and len(store) > 100 and store.image_size == 32
    assert {"train", "train-1", "test"} <= set(available_splits(demo_root))
    split = load_split(demo_root, "train-1", 32)
    assert split.class_names == list(ASL_LETTERS)
    assert sorted(split.labels.tolist()) == list(range(24))
