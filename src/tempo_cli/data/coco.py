"""COCO instance-segmentation datasets (the `ASL_mask` layout) with strict validation.

Layout (SPEC.md "Data layouts"): `<root>/annotations/instances_Train.json`,
`<root>/annotations/instances_Test.json`, images in `<root>/images/`.
Segmentations may be bitmask RLE (compressed or uncompressed, detectron2's
`MASK_FORMAT = bitmask`) or polygons.

`load_coco_split` reads one json file, checks everything the training loop and
pycocotools rely on, and raises `TempoError` naming the file and the problem
(missing keys, image files that do not exist, unknown category ids, an empty
annotation list, malformed json or segmentations). `data.coco_instances.CocoInstances`
turns a validated split into the `(image, target)` pairs torchvision's Mask R-CNN takes.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tempo_cli.errors import TempoError

SPLIT_FILES = {"train": "instances_Train.json", "test": "instances_Test.json"}

_IMAGE_KEYS = ("id", "file_name")
_ANNOTATION_KEYS = ("image_id", "category_id", "segmentation")
_CATEGORY_KEYS = ("id", "name")


@dataclass
class CocoSplit:
    """One validated COCO instances file.

    `coco_dict` is the sanitised dictionary (every annotation has `id`, `area`,
    `bbox` and `iscrowd`; every image `height` and `width`), ready for
    `pycocotools.coco.COCO`. `category_ids` are sorted; label `k + 1` of the model
    is category `category_ids[k]` (0 is background).
    """

    json_path: Path
    image_root: Path
    coco_dict: dict[str, Any]
    category_ids: list[int]
    category_names: list[str]
    image_ids: list[int]
    annotations_by_image: dict[int, list[dict[str, Any]]] = field(repr=False)

    @property
    def num_classes(self) -> int:
        """Number of object categories (without background)."""
        return len(self.category_ids)

    def image_info(self, image_id: int) -> dict[str, Any]:
        return self._images[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self._images[image_id]["file_name"]

    def __post_init__(self) -> None:
        self._images = {int(im["id"]): im for im in self.coco_dict["images"]}

    def pycocotools(self) -> Any:
        """A `pycocotools.coco.COCO` index of this split (quietly built)."""
        import contextlib
        import io

        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = copy.deepcopy(self.coco_dict)
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def dataset_files(root: Path) -> tuple[Path, Path, Path]:
    """(train json, test json, image folder) of a dataset root in the ASL_mask layout."""
    ann = root / "annotations"
    return ann / SPLIT_FILES["train"], ann / SPLIT_FILES["test"], root / "images"


def check_layout(root: Path) -> None:
    """TempoError unless `root` holds annotations/instances_{Train,Test}.json and images/."""
    train, test, images = dataset_files(root)
    for p in (train, test):
        if not p.is_file():
            raise TempoError(
                f"{p} not found: a segmentation dataset needs annotations/instances_Train.json, "
                "annotations/instances_Test.json and images/ (the ASL_mask layout); "
                "use --data demo, `tempo download asl`, or --data PATH"
            )
    if not images.is_dir():
        raise TempoError(f"{images} not found: the images of {root} belong in images/")


def _fail(path: Path, what: str) -> TempoError:
    return TempoError(f"{path}: {what}")


def _check_segmentation(seg: Any, height: int, width: int) -> str | None:
    """Why `seg` is not a usable segmentation, or None if it is."""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE segmentation needs 'counts' and 'size'"
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2):
            return "RLE 'size' must be [height, width]"
        if [int(size[0]), int(size[1])] != [height, width]:
            return f"RLE size {size} differs from the image size [{height}, {width}]"
        if not isinstance(seg["counts"], (str, list)):
            return "RLE 'counts' must be a string or a list of integers"
        return None
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "each polygon must be a flat list of at least 3 x,y pairs"
            if not all(isinstance(v, (int, float)) for v in poly):
                return "polygon coordinates must be numbers"
        return None
    return "segmentation must be an RLE dict or a list of polygons"


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A (H, W) uint8 mask from RLE (compressed or not) or polygons."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools' own numpy-2 DeprecationWarning (its __array__ lacks `copy`).
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_quiet(mask_utils, seg, height, width)


def _decode_quiet(mask_utils: Any, seg: Any, height: int, width: int) -> np.ndarray:
    if isinstance(seg, list):
        rles = mask_utils.frPyObjects(seg, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as e:
        raise TempoError(f"{path}: not a readable image ({e})") from None


def load_coco_split(json_path: str | Path, image_root: str | Path) -> CocoSplit:
    """Read and validate one COCO instances file; TempoError naming the problem otherwise."""
    json_path, image_root = Path(json_path), Path(image_root)
    data = _read_instances_json(json_path)
    names = _read_categories(json_path, data["categories"])
    category_ids = sorted(names)
    images = _read_images(json_path, data["images"], image_root)
    annotations, by_image = _read_annotations(json_path, data["annotations"], names, images)
    coco_dict = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": names[c], "supercategory": ""} for c in category_ids],
    }
    return CocoSplit(
        json_path=json_path,
        image_root=image_root,
        coco_dict=coco_dict,
        category_ids=category_ids,
        category_names=[names[c] for c in category_ids],
        image_ids=[int(im["id"]) for im in images],
        annotations_by_image=by_image,
    )


def _read_instances_json(json_path: Path) -> dict[str, Any]:
    """The parsed file, checked to hold lists under images, annotations and categories."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TempoError(f"{json_path} not found") from None
    except UnicodeDecodeError as e:
        raise _fail(json_path, f"not a UTF-8 text file ({e})") from None
    except json.JSONDecodeError as e:
        raise _fail(
            json_path, f"malformed JSON ({e.msg} at line {e.lineno} col {e.colno})"
        ) from None
    if not isinstance(data, dict):
        raise _fail(json_path, "not a COCO instances file (top level must be an object)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise _fail(
                json_path,
                f"missing key '{key}' (COCO instances needs images, annotations and categories)",
            )
        if not isinstance(data[key], list):
            raise _fail(json_path, f"'{key}' must be a list")
    return data


def _read_categories(json_path: Path, categories: list[Any]) -> dict[int, str]:
    """Category id -> name, in file order; ids must be unique and the list non-empty."""
    if not categories:
        raise _fail(json_path, "empty 'categories' list")
    names: dict[int, str] = {}
    for i, cat in enumerate(categories):
        _require_keys(json_path, f"categories[{i}]", cat, _CATEGORY_KEYS)
        if int(cat["id"]) in names:
            raise _fail(json_path, f"duplicate category id {cat['id']}")
        names[int(cat["id"])] = str(cat["name"])
    return names


def _read_images(json_path: Path, raw_images: list[Any], image_root: Path) -> list[dict[str, Any]]:
    """Copies of the image entries, with `height`/`width` read from the file where missing."""
    images: list[dict[str, Any]] = []
    seen_ids: set[int] = set()
    for i, im in enumerate(raw_images):
        _require_keys(json_path, f"images[{i}]", im, _IMAGE_KEYS)
        image_id = int(im["id"])
        if image_id in seen_ids:
            raise _fail(json_path, f"duplicate image id {image_id}")
        path = image_root / str(im["file_name"])
        if not path.is_file():
            raise _fail(json_path, f"image file {path} (images[{i}], id {image_id}) does not exist")
        im = dict(im)
        if "height" not in im or "width" not in im:
            im["height"], im["width"] = _image_size(path)
        images.append(im)
        seen_ids.add(image_id)
    if not images:
        raise _fail(json_path, "empty 'images' list")
    return images


def _read_annotations(
    json_path: Path,
    raw_annotations: list[Any],
    names: dict[int, str],
    images: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """(sanitised annotations, the same annotations grouped by image id).

    Each is a copy given an `id` (numbered after the largest one in the file), `iscrowd`
    (0), and `area`/`bbox` computed from its mask where missing.
    """
    if not raw_annotations:
        raise _fail(json_path, "empty 'annotations' list: nothing to train or evaluate on")
    images_by_id = {int(im["id"]): im for im in images}
    by_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images_by_id}
    clean: list[dict[str, Any]] = []
    used_ids = {int(a["id"]) for a in raw_annotations if isinstance(a, dict) and "id" in a}
    next_id = max(used_ids, default=0) + 1
    for i, ann in enumerate(raw_annotations):
        im = _annotation_image(json_path, i, ann, names, images_by_id)
        ann = dict(ann)
        if "id" not in ann:
            ann["id"] = next_id
            next_id += 1
        ann.setdefault("iscrowd", 0)
        _complete_geometry(json_path, i, ann, int(im["height"]), int(im["width"]))
        clean.append(ann)
        by_image[int(ann["image_id"])].append(ann)
    return clean, by_image


def _annotation_image(
    json_path: Path,
    i: int,
    ann: Any,
    names: dict[int, str],
    images_by_id: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """The image `annotations[i]` belongs to, after checking its keys, category and mask."""
    _require_keys(json_path, f"annotations[{i}]", ann, _ANNOTATION_KEYS)
    cat = int(ann["category_id"])
    if cat not in names:
        category_ids = sorted(names)
        raise _fail(
            json_path,
            f"annotations[{i}] has category id {cat}, out of range "
            f"(categories: {category_ids[0]}..{category_ids[-1]}, {len(category_ids)} ids)",
        )
    image_id = int(ann["image_id"])
    if image_id not in images_by_id:
        raise _fail(json_path, f"annotations[{i}] refers to image id {image_id}, not in 'images'")
    im = images_by_id[image_id]
    why = _check_segmentation(ann["segmentation"], int(im["height"]), int(im["width"]))
    if why:
        raise _fail(json_path, f"annotations[{i}]: {why}")
    return im


def _complete_geometry(
    json_path: Path, i: int, ann: dict[str, Any], height: int, width: int
) -> None:
    """Fill in a missing `area`/`bbox` of `ann` (in place) from its decoded mask; check `bbox`."""
    if "area" not in ann or "bbox" not in ann:
        try:
            mask = decode_segmentation(ann["segmentation"], height, width)
        except Exception as e:  # pycocotools raises assorted types
            raise _fail(json_path, f"annotations[{i}]: undecodable segmentation ({e})") from None
        ann.setdefault("area", float(mask.sum()))
        ann.setdefault("bbox", _mask_bbox(mask))
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise _fail(json_path, f"annotations[{i}]: 'bbox' must be [x, y, width, height]")


def _require_keys(json_path: Path, where: str, entry: Any, keys: tuple[str, ...]) -> None:
    """TempoError naming the first of `keys` that `entry` (which must be an object) lacks."""
    for key in keys:
        if not isinstance(entry, dict) or key not in entry:
            raise _fail(json_path, f"{where} is missing key '{key}'")


def _mask_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]


def load_coco_dataset(root: str | Path) -> tuple[CocoSplit, CocoSplit]:
    """(train, test) splits of a dataset root; both must share one category list."""
    root = Path(root)
    check_layout(root)
    train_json, test_json, images = dataset_files(root)
    train = load_coco_split(train_json, images)
    test = load_coco_split(test_json, images)
    if train.category_ids != test.category_ids:
        raise TempoError(
            f"{train_json} and {test_json} list different categories "
            f"({len(train.category_ids)} vs {len(test.category_ids)} ids); they must match"
        )
    return train, test
