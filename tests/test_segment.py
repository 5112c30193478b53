"""`tempo segment`: COCO validation, AP computation, schedule and model pieces (fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

# --- a tiny COCO set built in tmp_path -------------------------------------------------


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _split(n: int, first_id: int, polygons: bool = False) -> dict[str, Any]:
    images, annotations = [], []
    for k in range(n):
        image_id = first_id + k
        mask = np.zeros((32, 40), dtype=np.uint8)
        mask[4 + k : 20 + k, 6:30] = 1
        seg: Any = [[6, 4 + k, 30, 4 + k, 30, 20 + k, 6, 20 + k]] if polygons else _rle(mask)
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "width": 40, "height": 32})
        annotations.append(
            {"id": image_id, "image_id": image_id, "category_id": 5 if k % 2 else 9,
             "segmentation": seg, "iscrowd": 0}
        )  # fmt: skip
    cats = [{"id": 5, "name": "A"}, {"id": 9, "name": "B"}]
    return {"images": images, "annotations": annotations, "categories": cats}


def make_coco(root: Path, polygons: bool = False) -> Path:
    """A valid ASL_mask-layout dataset: 4 train + 2 test images of 40x32, categories 5 and 9."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, split in (("Train", _split(4, 1, polygons)), ("Test", _split(2, 101, polygons))):
        for im in split["images"]:
            Image.new("RGB", (40, 32), (120, 60, 30)).save(root / "images" / im["file_name"])
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(split))
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "mini")


def _edit_train(root: Path, edit: Any) -> None:
    p = root / "annotations" / "instances_Train.json"
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data))


# --- validation through the CLI (exit 1, one line naming the problem) ------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("annotations"), "missing key 'annotations'"),
        (lambda d: d.pop("categories"), "missing key 'categories'"),
        (lambda d: d["annotations"][1].pop("segmentation"), "[1] is missing key 'segmentation'"),
        (lambda d: d["images"][0].pop("file_name"), "images[0] is missing key 'file_name'"),
        (lambda d: d["annotations"][2].update(category_id=99), "category id 99, out of range"),
        (lambda d: d.update(annotations=[]), "empty 'annotations' list"),
        (lambda d: d["images"][3].update(file_name="gone.png"), "gone.png"),
        (lambda d: d["annotations"][0].update(image_id=555), "image id 555"),
        (lambda d: d["annotations"][0]["segmentation"].update(size=[8, 8]), "RLE size [8, 8]"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), "polygon"),
    ],
)  # fmt: skip
def test_malformed_coco_exits_1_naming_the_problem(
    cli: Any, coco_root: Path, edit: Any, expected: str
) -> None:
    _edit_train(coco_root, edit)
    r = cli("segment", "--path", "random", "--data", coco_root, "--max-iter", "1")
    assert r.code == 1, r.err
    assert expected in r.err
    assert "instances_Train.json" in r.err
    assert "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_missing_image_file_is_named(cli: Any, coco_root: Path) -> None:
    (coco_root / "images" / "im2.png").unlink()
    r = cli("segment", "--path", "random", "--data", coco_root)
    assert r.code == 1
    assert "im2.png" in r.err and "does not exist" in r.err


def test_malformed_json_exits_1(cli: Any, coco_root: Path) -> None:
    p = coco_root / "annotations" / "instances_Test.json"
    p.write_text(p.read_text()[:-20])
    r = cli("segment", "--path", "random", "--data", coco_root)
    assert r.code == 1
    assert "instances_Test.json" in r.err and "malformed JSON" in r.err


def test_wrong_layout_and_unknown_dataset(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("segment", "--path", "random", "--data", tmp_path / "empty")
    assert r.code == 1 and "instances_Train.json" in r.err and "ASL_mask layout" in r.err
    r = cli("segment", "--path", "random", "--data", "no_such_dataset")
    assert r.code == 1 and "tempo download asl" in r.err


def test_usage_errors_exit_2(cli: Any, coco_root: Path) -> None:
    r = cli("segment", "--data", coco_root)
    assert r.code == 2 and "--path" in r.err
    r = cli("segment", "--path", "random", "--engine", "mmdet", "--data", coco_root)
    assert r.code == 2 and "--engine" in r.err
    r = cli("segment", "--path", "a", "--path", "b", "--resume", "x.pt", "--data", coco_root)
    assert r.code == 2 and "--resume" in r.err
    r = cli("segment", "--path", "random", "--max-iter", "0")
    assert r.code == 2 and "--max-iter" in r.err


def test_detectron2_missing_says_it_is_optional(
    cli: Any, coco_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import -> ImportError
    r = cli("segment", "--engine", "detectron2", "--path", "random", "--data", coco_root)
    assert r.code == 1
    assert "optional" in r.err
    git = "'git+https://github.com/facebookresearch/detectron2.git'"
    assert f"pip install --no-build-isolation {git}" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_resume_of_a_foreign_file_is_refused(cli: Any, coco_root: Path, tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    r = cli("segment", "--resume", tmp_path / "x.pt", "--data", coco_root)
    assert r.code == 1 and "not a `tempo segment` checkpoint" in r.err


def test_resume_takes_the_runs_settings_from_the_checkpoint(
    cli: Any, coco_root: Path, tmp_path: Path
) -> None:
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.segment import SegmentSettings
    from tempo_cli.training.state import TrainingState, save_state

    saved = load_settings(SegmentSettings, {"path": ["random"], "data": str(coco_root)})
    state = TrainingState.capture(
        "tempo-segment",
        settings=saved,
        position={"iteration": 1, "period_loss_sum": 0.0, "period_steps": 0},
        payload={"category_ids": [1, 2, 3]},
    )
    ckpt = save_state(tmp_path / "last.pt", state)
    # No --data: the run's own dataset is used (not the default ASL_mask), and found to
    # have other categories than the checkpoint.
    r = cli("segment", "--resume", ckpt)
    assert r.code == 1, r.err
    assert "trained on 3 categories" in r.err and str(coco_root) in r.err


def test_path_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.segment import SegmentSettings

    monkeypatch.setenv("TEMPO_PATH", "tempo.pth, random")
    s = load_settings(SegmentSettings, {})
    assert s.path == ["tempo.pth", "random"]
    assert (s.batch_size, s.lr, s.max_iter, s.eval_period, s.score_thresh) == (
        5, 0.00025, 15000, 1000, 0.7,
    )  # fmt: skip


# --- the dataset ------------------------------------------------------------------------


@pytest.mark.parametrize("polygons", [False, True])
def test_dataset_targets(tmp_path: Path, polygons: bool) -> None:
    from tempo_cli.data.coco import load_coco_dataset
    from tempo_cli.data.coco_instances import CocoInstances

    train, test = load_coco_dataset(make_coco(tmp_path / "d", polygons))
    assert train.category_ids == [5, 9] and train.category_names == ["A", "B"]
    ann = train.coco_dict["annotations"][0]
    assert ann["area"] > 0 and len(ann["bbox"]) == 4  # filled in from the mask
    ds = CocoInstances(train)
    image, target = ds[1]
    assert image.shape == (3, 32, 40) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["labels"].tolist() == [1]  # category 5 -> label 1 (0 = background)
    assert target["masks"].shape == (1, 32, 40) and target["masks"].dtype == torch.uint8
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    assert (x0, y0) == (6, 5) and abs(x1 - 30) <= 1 and abs(y1 - 21) <= 1
    assert ds.annotated_indices() == [0, 1, 2, 3]


def test_perfect_predictions_score_ap_1(tmp_path: Path) -> None:
    from tempo_cli.data.coco import load_coco_dataset
    from tempo_cli.data.coco_instances import CocoInstances
    from tempo_cli.segment.evaluation import _to_results, coco_ap

    _, test = load_coco_dataset(make_coco(tmp_path / "d"))
    ds = CocoInstances(test)
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        out = {
            "boxes": t["boxes"],
            "labels": t["labels"],
            "scores": torch.ones(len(t["labels"])),
            "masks": t["masks"][:, None].float(),
        }
        results += _to_results(out, ds.image_ids[i], test.category_ids)
    ap = coco_ap(test, ds.image_ids, results)
    assert ap["bbox_AP"] == pytest.approx(1.0) and ap["segm_AP"] == pytest.approx(1.0)
    assert coco_ap(test, ds.image_ids, [])["segm_AP"] == 0.0
    # A wrong class scores nothing.
    for r in results:
        r["category_id"] = 5 if r["category_id"] == 9 else 9
    assert coco_ap(test, ds.image_ids, results)["segm_AP"] == pytest.approx(0.0)


# --- schedule, figures, model ------------------------------------------------------------


def test_schedule_is_a_function_of_seed_and_iteration() -> None:
    from tempo_cli.segment.batches import BatchSchedule
    from tempo_cli.segment.train import lr_at

    a, b = BatchSchedule(7, 3, seed=1, flip=True), BatchSchedule(7, 3, seed=1, flip=True)
    assert [a.indices(i) for i in (5, 0, 2)] == [b.indices(i) for i in (5, 0, 2)]
    first_pass = sum((a.indices(i) for i in range(7)), [])[:7]  # 21 positions = 3 passes
    assert sorted(first_pass) == list(range(7))
    assert a.flips(3) == b.flips(3)
    assert BatchSchedule(7, 3, 1, flip=False).flips(3) == [False] * 3
    assert lr_at(0, 0.1, 10) == pytest.approx(0.1 * 0.001)
    assert lr_at(5, 0.1, 10) == pytest.approx(0.1 * (0.001 * 0.5 + 0.5))
    assert lr_at(10, 0.1, 10) == lr_at(9999, 0.1, 10) == 0.1
    assert lr_at(0, 0.1, 0) == 0.1


def test_hflip_moves_boxes_and_masks() -> None:
    from tempo_cli.segment.batches import _hflip

    image = torch.zeros(3, 4, 10)
    masks = torch.zeros(1, 4, 10, dtype=torch.uint8)
    masks[0, :, 1:3] = 1
    target = {"boxes": torch.tensor([[1.0, 0.0, 3.0, 4.0]]), "masks": masks}
    _, t = _hflip(image, target)
    assert t["boxes"].tolist() == [[7.0, 0.0, 9.0, 4.0]]
    assert t["masks"][0, 0].nonzero().flatten().tolist() == [7, 8]


def test_iterations_to_90pct() -> None:
    from tempo_cli.segment.evaluation import iterations_to_fraction

    evals = [{"iteration": i, "segm_AP": v} for i, v in ((1, 0.1), (2, 0.5), (3, 0.46), (4, 0.5))]
    assert iterations_to_fraction(evals) == 2
    assert iterations_to_fraction([{"iteration": 1, "segm_AP": 0.0}]) is None
    assert iterations_to_fraction([]) is None


def test_model_takes_the_backbone_and_freezes_like_detectron2() -> None:
    import torchvision

    from tempo_cli.errors import TempoError
    from tempo_cli.segment.model import IMAGE_MEAN, IMAGE_STD, ModelSpec, build_maskrcnn

    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    model = build_maskrcnn(ModelSpec("resnet18", 24, 64, 3, True), state)
    body = model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert torch.equal(body.bn1.running_var, state["bn1.running_var"])
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    assert model.roi_heads.box_predictor.cls_score.out_features == 25
    assert model.transform.image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert len(IMAGE_MEAN) == 3
    assert model.transform.image_std == pytest.approx(IMAGE_STD)
    assert model.transform.image_std == pytest.approx([0.229, 0.224, 0.225])
    assert model.transform.min_size == (64,)
    with pytest.raises(TempoError, match="shape"):
        build_maskrcnn(ModelSpec("resnet50", 24, 64, 3, True), state)


def test_figures_render() -> None:
    from tempo_cli.segment.plots import ap_figure, comparison_figure, predictions_figure

    evals = [{"iteration": 1, "bbox_AP": 0.1, "segm_AP": None}, {"iteration": 2, "bbox_AP": 0.2,
             "segm_AP": 0.3}]  # fmt: skip
    ap_figure(evals)
    comparison_figure([{"label": "a", "evals": evals}, {"label": "b", "evals": evals}])
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, 2:5, 2:5] = 0.9
    pred = {"boxes": torch.tensor([[2.0, 2, 5, 5]]), "labels": torch.tensor([1]),
            "scores": torch.tensor([0.9]), "masks": masks}  # fmt: skip
    fig = predictions_figure([torch.rand(3, 8, 8)], [pred], ["A"], 0.7)
    assert fig.axes
