"""detectron2 key mapping and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from tempo_cli.errors import TempoError
from tempo_cli.models.detectron2_format import (
    from_detectron2,
    load_detectron2_pkl,
    safe_loads,
    save_detectron2_pkl,
    to_detectron2,
)

D2_NAME = re.compile(
    r"^(stem\.conv1|res[2-5]\.\d+\.(conv[1-3]|shortcut))"
    r"(\.weight|\.norm\.(weight|bias|running_mean|running_var))$"
)


def test_resnet18_names_are_detectron2s() -> None:
    d2 = to_detectron2(tvm.resnet18(weights=None).state_dict())
    assert all(D2_NAME.match(k) for k in d2), [k for k in d2 if not D2_NAME.match(k)]
    expected = {"stem.conv1.weight"} | {f"stem.conv1.norm.{n}" for n in ("weight", "bias")}
    expected |= {"res2.0.conv1.weight", "res2.1.conv2.norm.running_var"}
    expected |= {"res3.0.shortcut.weight", "res3.0.shortcut.norm.running_mean"}
    assert expected <= set(d2)
    assert "res2.0.shortcut.weight" not in d2  # basic blocks: no projection in layer1
    assert all(isinstance(v, np.ndarray) for v in d2.values())


def test_resnet50_names_and_inverse() -> None:
    state = tvm.resnet50(weights=None).state_dict()
    d2 = to_detectron2(state)
    assert all(D2_NAME.match(k) for k in d2)
    for k in (
        "stem.conv1.weight",
        "stem.conv1.norm.running_mean",
        "res2.0.conv3.weight",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.bias",
        "res5.2.conv3.norm.running_var",
    ):
        assert k in d2, k
    # 53 convolutions (+ 53 norms x 4) = every conv/bn of torchvision's ResNet-50.
    assert len(d2) == len([k for k in state if not k.endswith("num_batches_tracked")]) - 2
    back = from_detectron2(d2)
    assert set(back) == {k for k in state if not k.startswith("fc.") and "num_batches" not in k}
    for k, v in back.items():
        assert torch.equal(v, state[k]), k


def test_pkl_round_trip_and_payload(tmp_path: Path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    p = save_detectron2_pkl(tmp_path / "m.pkl", state)
    obj = load_detectron2_pkl(p)
    assert obj["__author__"] == "torchvision" and obj["matching_heuristics"] is True
    # Plain pickle (what detectron2 does) gives the same.
    with open(p, "rb") as f:
        plain = pickle.load(f)
    assert set(plain["model"]) == set(obj["model"])


def test_mask_rcnn_style_prefix_and_other_keys() -> None:
    d2 = to_detectron2(tvm.resnet18(weights=None).state_dict())
    model = {f"backbone.bottom_up.{k}": v for k, v in d2.items()}
    model["roi_heads.box_predictor.cls_score.weight"] = np.zeros((25, 1024), np.float32)
    assert set(from_detectron2(model)) == set(from_detectron2(d2))
    with pytest.raises(TempoError, match="no detectron2 ResNet"):
        from_detectron2({"roi_heads.x": np.zeros(1)})


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickles_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for i, payload in enumerate(
        [
            {"model": {"stem.conv1.weight": Evil(marker)}},
            Evil(marker),
            {"model": np.array([Evil(marker)], dtype=object)},
        ]
    ):
        p = tmp_path / f"evil{i}.pkl"
        p.write_bytes(pickle.dumps(payload, protocol=2 if i == 0 else 4))
        with pytest.raises(TempoError, match=f"evil{i}.pkl.*refused"):
            load_detectron2_pkl(p)
        assert not marker.exists()


def test_other_numpy_pickle_protocols() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    for proto in (2, 3, 4, 5):
        obj = safe_loads(pickle.dumps({"a": arr, "s": np.float32(1.5), "l": [1, "x"]}, proto))
        assert np.array_equal(obj["a"], arr) and obj["s"] == 1.5 and obj["l"] == [1, "x"]
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(pickle.dumps({"a": np.array([1, None], dtype=object)}))


# --- the study's segmentation/convert.py files --------------------------------------------


def write_convert_py_pkl(state: dict[str, torch.Tensor], out: Path) -> Path:
    """What the study's `segmentation/convert.py` (detectron2's convert-torchvision-to-d2.py)
    writes: every key renamed, `fc.*` and `num_batches_tracked` kept, numpy values."""
    new = {}
    for k in list(state):
        old = k
        if "layer" not in k:
            k = "stem." + k
        for t in [1, 2, 3, 4]:
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in [1, 2, 3]:
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut")
        k = k.replace("downsample.1", "shortcut.norm")
        new[k] = state[old].detach().numpy()
    res = {"model": new, "__author__": "torchvision", "matching_heuristics": True}
    with open(out, "wb") as f:
        pickle.dump(res, f)
    return out


def test_convert_py_file_reads_as_tempos_export(cli, tmp_path: Path) -> None:
    from tempo_cli.segment.core import backbone_state

    torch.manual_seed(0)
    state = tvm.resnet18(weights=None).state_dict()
    theirs = write_convert_py_pkl(state, tmp_path / "convert.pkl")
    torch.save(state, tmp_path / "r18.pth")
    ours = tmp_path / "tempo.pkl"
    assert cli("export", "--path", tmp_path / "r18.pth", "--format", "detectron2",
               "--out", ours).code == 0  # fmt: skip
    theirs_model, ours_model = (
        load_detectron2_pkl(theirs)["model"],
        load_detectron2_pkl(ours)["model"],
    )
    extra = {k for k in theirs_model if k not in ours_model}
    assert {"stem.fc.weight", "stem.fc.bias", "stem.conv1.norm.num_batches_tracked"} <= extra
    assert all(k.startswith("stem.fc.") or k.endswith("num_batches_tracked") for k in extra)
    assert set(ours_model) <= set(theirs_model)
    for k, v in ours_model.items():  # the backbone: same keys, same values
        assert np.array_equal(theirs_model[k], v), k
    # tempo reads it (restricted unpickler) as the same ResNet; the ImageNet-sized fc of a
    # torchvision ResNet is not a head.
    arch, read = backbone_state(str(theirs), None)
    assert arch == "resnet18"
    for k, v in read.items():
        assert torch.equal(v, state[k]), k
    again = tmp_path / "again.pkl"
    assert cli("export", "--path", theirs, "--format", "detectron2", "--out", again).code == 0
    assert load_detectron2_pkl(again)["model"].keys() == ours_model.keys()


def test_convert_py_file_loads_into_detectron2(tmp_path: Path) -> None:
    """detectron2's own matching fills every backbone tensor of the model from a
    convert.py file (its fc and counters are ignored), with tempo's values."""
    from tempo_cli.segment.detectron2_config import INSTALL, require_detectron2

    try:
        require_detectron2()
    except TempoError:
        pytest.skip(f"detectron2 is not installed; install it with {INSTALL}")
    from tempo_cli.segment.detectron2_config import D2Spec, build_config, build_model, load_payload
    from tempo_cli.settings.segment import SegmentSettings

    state = tvm.resnet18(weights=None).state_dict()
    p = write_convert_py_pkl(state, tmp_path / "convert.pkl")
    spec = D2Spec("resnet18", 24, 3, True)
    model = build_model(build_config(SegmentSettings(path=["x"]), spec, torch.device("cpu")))
    assert load_payload(model, load_detectron2_pkl(p)) == []
    d2 = model.state_dict()
    assert torch.equal(
        d2["backbone.bottom_up.res3.0.shortcut.weight"], state["layer2.0.downsample.0.weight"]
    )
    assert torch.equal(
        d2["backbone.bottom_up.stem.conv1.norm.running_var"], state["bn1.running_var"]
    )
