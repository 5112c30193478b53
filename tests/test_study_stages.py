"""`tempo study` paths test_study_run.py does not run: semisup + segment stages, pre-training
repeats (seed-<k> folders, mean ± population std across them), and the plan of a study with
explanation stages (pretrain, classifier, then the selected stages in `STAGES` order).

Every study here is tiny: resnet18 at 32 px, 2 pre-training steps, a few probe iterations,
one Mask R-CNN iteration on 2 images.
"""

from __future__ import annotations

import json
import os
import statistics
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch


def _runs() -> Path:
    return Path(os.environ["TEMPO_RUNS_DIR"])


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _toml_str(value: str | Path) -> str:
    """A TOML basic string (JSON's string syntax is valid TOML for plain paths)."""
    return json.dumps(Path(value).as_posix() if isinstance(value, Path) else value)


class _Cells(HTMLParser):
    """The report's table cells that carry numbers: {(table, arm, col): attributes + text}.
    Accuracy tables put the data-* attributes on the <td>, the others on a <span>."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-arm" in a and "data-col" in a:
            cell = {**a, "text": ""}
            self.cells[a["data-table"], a["data-arm"], a["data-col"]] = cell
            self._open.append(cell)
        elif tag in ("td", "span") and self._open:
            self._open.append(self._open[-1])  # nested tag: text goes to the same cell

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "span") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1]["text"] += data


def _report_cells(study_dir: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    parser = _Cells()
    parser.feed((study_dir / "report.html").read_text(encoding="utf-8"))
    parser.close()
    return parser.cells


# --- 1. semisup and segment ---------------------------------------------------------------

#: A random arm through semisup and segment (the tiny settings of test_segment_train.py;
#: the study's image_size 32 is also segment's, the smallest SegmentSettings takes).
SEMISUP_SEGMENT = """\
data = {root}
backbone = "resnet18"
image_size = 32
stages = ["segment", "semisup"]

[semisup]
samples_pc = "1"
runs = 1
iterations = 2
batch_size = 8
eval_every = 2

[segment]
image_size = 32
max_iter = 1
eval_period = 1
batch_size = 2
lr = 0.005
warmup_iters = 0
augment = false
train_images = 2
eval_images = 2
roi_batch_size = 32
proposals = 100
vis_images = 2

[arms.random]
source = "random"
"""


@pytest.mark.slow
def test_semisup_and_segment_stages_reach_study_json_and_report(
    cli: Any, tmp_path: Path, demo_root: Path
) -> None:
    config = tmp_path / "segsemi.toml"
    config.write_text(SEMISUP_SEGMENT.format(root=_toml_str(demo_root)), encoding="utf-8")
    r = cli("study", "--config", config, "--quiet")
    assert r.code == 0, r.err
    study_dir = _runs() / "segsemi"
    # the study's internal data check runs once, in the first arm's folder
    assert sorted(p.name for p in (study_dir / "random").iterdir()) == [
        "data", "segment", "semisup"
    ]  # fmt: skip

    # semisup: its usual metrics.json, one selected record, copied into the semisup table.
    semi = _json(study_dir / "random/semisup/metrics.json")
    assert semi["protocol"] == "semisup"
    (rec,) = semi["results"]
    assert rec["samples_pc"] == 1 and rec["runs"] == 1
    for key in ("accuracy_final_mean", "accuracy_final_std", "accuracy_best_mean"):
        assert 0.0 <= rec[key] <= 1.0, key
    assert _json(study_dir / "random/semisup/config.json")["iterations"] == 2

    # segment: its usual metrics.json, on the demo's mask sibling, at the study's 32 px.
    seg = _json(study_dir / "random/segment/metrics.json")
    assert [e["iteration"] for e in seg["evals"]] == [1]
    assert "iterations_to_90pct_final_segm_AP" in seg
    for key in ("segm_AP", "bbox_AP"):
        assert 0.0 <= seg["final"][key] <= 1.0, key
    seg_config = _json(study_dir / "random/segment/config.json")
    assert seg_config["image_size"] == 32 and seg_config["max_iter"] == 1
    assert seg_config["path"] == ["random"] and seg_config["backbone"] == "resnet18"
    for stage in ("semisup", "segment"):
        record = _json(study_dir / f"random/{stage}/stage.json")
        assert record["complete"] and "skipped" not in record, stage

    data = _json(study_dir / "study.json")
    assert "headline" not in data and "knn" not in data  # only the selected stages' tables
    table = data["semisup"]
    assert table["stage"] == "semisup" and table["columns"] == ["1"]
    assert table["over"] == "1 fine-tuning run" and table["baseline"] == "random"
    (row,) = table["rows"]
    want = {"mean": rec["accuracy_final_mean"], "std": rec["accuracy_final_std"], "n": 1}
    assert row["arm"] == "random" and row["cells"]["1"] == want | (
        {"lr": rec["lr"]} if rec.get("lr") is not None else {}
    )
    assert row["gains"] == {"1": 0.0} and table["best"] == {"1": ["random"]}

    (seg_row,) = data["segment"]["rows"]
    assert seg_row["arm"] == "random"
    for key in ("segm_AP", "bbox_AP"):
        assert seg_row[key] == {"mean": seg["final"][key], "std": None, "n": 1}, key
    iters = seg["iterations_to_90pct_final_segm_AP"]
    key = "iterations_to_90pct_final_segm_AP"
    assert seg_row[key] == (None if iters is None else {"mean": iters, "std": None, "n": 1})
    stages = {(s["arm"], s["stage"]) for s in data["stages"]}
    assert stages == {("random", "data"), ("random", "semisup"), ("random", "segment")}

    cells = _report_cells(study_dir)
    semi_cell = cells["semisup", "random", "1"]
    assert float(semi_cell["data-mean"]) == rec["accuracy_final_mean"]
    assert f"{rec['accuracy_final_mean']:.3f}" in semi_cell["text"]
    for key in ("segm_AP", "bbox_AP"):
        cell = cells["segment", "random", key]
        assert float(cell["data-mean"]) == seg["final"][key]
        assert cell["text"] == f"{seg['final'][key]:.3f}"
    it_cell = cells["segment", "random", "iterations_to_90pct_final_segm_AP"]
    assert it_cell["text"] == ("–" if iters is None else f"{iters:g}")
    md = (study_dir / "report.md").read_text(encoding="utf-8")
    segm, bbox = (f"{seg['final'][k]:.3f}" for k in ("segm_AP", "bbox_AP"))
    assert f"| random | {segm} | {bbox} | {it_cell['text']} |" in md
    assert "Semi-supervised fine-tuning" in md and "## Segmentation" in md


# --- 2. pre-training repeats --------------------------------------------------------------

REPEATS = """\
data = "demo"
backbone = "resnet18"
image_size = 32
stages = ["linear"]
baseline = "random"

[pretrain]
init = "random"
epochs = 1
max_steps = 2
batch_size = 8
monitor = "none"
lr = 1e-6

[linear]
samples_pc = "1"
runs = 2
iterations = 20

[arms.tempo]
repeats = 2
pretrain = { proximity = 5 }

[arms.random]
source = "random"
"""


def _state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model.pt (whatever nesting the file format uses)."""
    out: dict[str, torch.Tensor] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}")

    walk(torch.load(path, map_location="cpu", weights_only=False), "")
    return out


@pytest.mark.slow
def test_repeats_pretrain_per_seed_and_headline_is_mean_and_pstdev_over_them(
    cli: Any, tmp_path: Path, demo_root: Path
) -> None:
    config = tmp_path / "reps.toml"
    config.write_text(REPEATS, encoding="utf-8")
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    assert "tempo seed-0 pretrain" in r.err and "tempo seed-1 pretrain" in r.err
    study_dir = _runs() / "reps"
    tempo = study_dir / "tempo"
    assert sorted(p.name for p in tempo.iterdir()) == ["seed-0", "seed-1"]
    assert sorted(p.name for p in (study_dir / "random").iterdir()) == ["linear"]
    for k in (0, 1):
        seed_dir = tempo / f"seed-{k}"
        once = ["data"] if k == 0 else []  # the data check: first arm, first repeat
        assert sorted(p.name for p in seed_dir.iterdir()) == [*once, "linear", "pretrain"]
        assert _json(seed_dir / "pretrain/config.json")["seed"] == k
        record = _json(seed_dir / "pretrain/stage.json")
        assert record["repeat"] == k and record["complete"]
        linear_path = _json(seed_dir / "linear/config.json")["path"]
        assert linear_path == [str(seed_dir / "pretrain/model.pt")]

    a, b = (_state(tempo / f"seed-{k}/pretrain/model.pt") for k in (0, 1))
    assert a.keys() == b.keys() and a
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())

    data = _json(study_dir / "study.json")
    headline = data["headline"]
    rows = {row["arm"]: row for row in headline["rows"]}
    assert headline["columns"] == ["1"] and list(rows) == ["tempo", "random"]
    assert rows["tempo"]["over"] == "2 pre-trainings"
    assert rows["random"]["over"] == "2 probe runs"
    assert headline["over"] == "2 pre-trainings; 2 probe runs"

    # The tempo cell: mean and population std (statistics.pstdev) of the two seeds'
    # selected records' accuracy_final_mean, rounded to 6 places.
    selected = []
    for k in (0, 1):
        results = _json(tempo / f"seed-{k}/linear/metrics.json")["results"]
        (rec,) = [x for x in results if x.get("selected", True)]
        assert rec["samples_pc"] == 1 and rec["runs"] == 2
        selected.append(rec["accuracy_final_mean"])
    # Distinct seeds give distinct probes (lr 1e-6 keeps each backbone near its seeded
    # init; at the default lr two steps blow the features up and every probe is at chance),
    # so the population and the sample std differ.
    assert selected[0] != selected[1]
    cell = rows["tempo"]["cells"]["1"]
    assert cell["n"] == 2
    assert cell["mean"] == round(statistics.fmean(selected), 6)
    assert cell["std"] == round(statistics.pstdev(selected), 6)
    assert cell["std"] != round(statistics.stdev(selected), 6)

    (rand,) = _json(study_dir / "random/linear/metrics.json")["results"]
    assert rows["random"]["cells"]["1"]["mean"] == rand["accuracy_final_mean"]
    assert rows["random"]["cells"]["1"]["std"] == rand["accuracy_final_std"]
    gain = round(100.0 * (cell["mean"] - rand["accuracy_final_mean"]), 4)
    assert rows["tempo"]["gains"] == {"1": gain}

    runs = data["arms"]["tempo"]["runs"]
    assert [(x["repeat"], x["dir"]) for x in runs] == [(0, "tempo/seed-0"), (1, "tempo/seed-1")]
    assert [x["repeat"] for x in data["pretrain"]["rows"]] == [0, 1]

    html_cell = _report_cells(study_dir)["headline", "tempo", "1"]
    assert float(html_cell["data-mean"]) == cell["mean"]
    assert float(html_cell["data-std"]) == cell["std"] and html_cell["data-n"] == "2"


# --- 3. the plan of a study with explanation stages ---------------------------------------

EXPLAIN = """\
data = "demo"
backbone = "resnet18"
image_size = 32
stages = ["noise", "knn", "lrp", "linear", "relevance", "semisup"]
classifier_samples_pc = "5"

[pretrain]
init = "random"
epochs = 1

[arms.tempo]
repeats = 2
pretrain = { proximity = 5 }

[arms.random]
source = "random"

[arms.own]
pretrain = { proximity = 3 }
"""


def test_plan_with_explain_stages_orders_stages_and_feeds_them_the_classifier(
    tmp_path: Path,
) -> None:
    from tempo_cli import places
    from tempo_cli.study.runner import plan_study
    from tempo_cli.study.spec import load_study
    from tempo_cli.study.stages import CLASSIFIER_FILE, selectable

    config = tmp_path / "expl.toml"
    config.write_text(EXPLAIN, encoding="utf-8")
    study = load_study(config=config)
    plan = plan_study(study)
    runs = places.runs_dir()
    selected = [s for s in selectable() if s in study.stages]
    assert selected == ["linear", "semisup", "knn", "relevance", "lrp", "noise"]

    units = [("tempo", 0), ("tempo", 1), ("random", None), ("own", None)]
    want = []
    for arm, repeat in units:
        # linear's sweep (1..20, full) trains the classifier's probe (5 per class), so no
        # classifier stage: linear saves it
        first = [] if arm == "random" else ["pretrain"]
        first = ["data", *first] if (arm, repeat) == ("tempo", 0) else first  # once a study
        want += [(arm, repeat, s) for s in [*first, *selected]]
    assert [(p.arm.name, p.repeat, p.stage) for p in plan] == want

    for p in plan:
        base = runs / "expl" / p.arm.folder
        if p.repeat is not None:
            base = base / f"seed-{p.repeat}"
        assert p.folder == base / p.stage
        assert p.settings.name == p.folder.relative_to(runs).as_posix()
        classifier = base / "linear" / CLASSIFIER_FILE
        backbone = "random" if p.arm.name == "random" else str(base / "pretrain/model.pt")
        if p.stage in ("relevance", "lrp", "noise"):
            assert p.settings.path == str(classifier), (p.arm.name, p.stage)
        elif p.stage == "linear":
            assert p.settings.path == [backbone]
            assert p.settings.save_model == str(classifier)
            assert (p.settings.samples_pc, p.settings.save_samples_pc) == ("1,5,10,15,20,full", "5")
        elif p.stage == "pretrain":
            assert p.settings.seed == (p.repeat or 0)
        elif p.stage == "data":  # the labelled data against the pre-training data
            assert (p.settings.data, p.settings.frames) == (study.labelled, study.data)
        else:
            assert p.settings.path == [backbone], (p.arm.name, p.stage)
    by = {(p.arm.name, p.repeat, p.stage): p.settings for p in plan}
    assert by["tempo", 1, "pretrain"].proximity == 5 and by["own", None, "pretrain"].proximity == 3
    assert by["tempo", 0, "noise"].attack == "noise"
    assert not (runs / "expl").exists()


# --- 4. the explanation stages lrp and relevance, through to the report -------------------

#: A random arm's classifier (30 iterations at 5 per class), explained by LRP and scored
#: inside the hand masks, on a slice of the demo (one test image per class: LRP and
#: relevance explain every test image).
LRP_RELEVANCE = """\
data = "demo"
labelled = {labelled}
backbone = "resnet18"
image_size = 32
stages = ["lrp", "relevance"]
classifier_samples_pc = "5"

[classifier]
runs = 1
iterations = 30

[arms.random]
source = "random"
"""


def _demo_slice(demo_root: Path, root: Path, per_class: dict[str, int]) -> Path:
    """The first images of each class of the demo's splits, and the hand masks of the
    test images kept."""
    import shutil

    for split, n in per_class.items():
        for cls in sorted(p for p in (demo_root / split).iterdir() if p.is_dir()):
            (root / split / cls.name).mkdir(parents=True)
            for image in sorted(cls.glob("*.png"))[:n]:
                shutil.copy(image, root / split / cls.name / image.name)
    masks = demo_root / "masks/gtFine/test"
    (root / "masks/gtFine/test").mkdir(parents=True)
    for image in (root / "test").glob("*/*.png"):
        for mask in masks.glob(f"{image.stem}_gtFine_*.png"):
            shutil.copy(mask, root / "masks/gtFine/test" / mask.name)
    return root


@pytest.mark.slow
def test_lrp_and_relevance_stages_reach_study_json_and_both_reports(
    cli: Any, tmp_path: Path, demo_root: Path
) -> None:
    labelled = _demo_slice(demo_root, tmp_path / "slice", {"train": 5, "val": 1, "test": 1})
    config = tmp_path / "expl.toml"
    config.write_text(LRP_RELEVANCE.format(labelled=_toml_str(labelled)), encoding="utf-8")
    r = cli("study", "--config", config, "--quiet")
    assert r.code == 0, r.err
    study_dir = _runs() / "expl"
    assert sorted(p.name for p in (study_dir / "random").iterdir()) == [
        "classifier", "data", "lrp", "relevance"
    ]  # fmt: skip
    classifier = str(study_dir / "random/classifier/classifier.pt")
    for stage in ("lrp", "relevance"):
        assert _json(study_dir / f"random/{stage}/config.json")["path"] == classifier
        record = _json(study_dir / f"random/{stage}/stage.json")
        assert record["complete"] and "skipped" not in record, stage
    lrp = _json(study_dir / "random/lrp/metrics.json")["models"][0]
    rel = _json(study_dir / "random/relevance/metrics.json")["models"][0]

    data = _json(study_dir / "study.json")
    (lrp_row,) = data["lrp"]["rows"]
    assert lrp_row["accuracy"] == {"mean": lrp["accuracy"], "std": None, "n": 1}
    assert lrp_row["sheets_dir"] == "random/lrp/sheets"
    (rel_row,) = data["relevance"]["rows"]
    assert (rel_row["rr_mean"], rel_row["rr_std"], rel_row["n"]) == (
        rel["rr_mean"], rel["rr_std"], rel["n"]
    )  # fmt: skip
    assert rel_row["over"] == f"{rel['n']} images"

    cells = _report_cells(study_dir)
    lrp_cell = cells["lrp", "random", "accuracy"]
    assert float(lrp_cell["data-mean"]) == lrp["accuracy"]
    assert lrp_cell["text"] == f"{lrp['accuracy']:.3f}"
    rr_cell = cells["relevance", "random", "rr"]
    assert float(rr_cell["data-mean"]) == rel["rr_mean"]
    assert float(rr_cell["data-std"]) == rel["rr_std"]
    assert rr_cell["text"] == f"{rel['rr_mean']:.3f} ± {rel['rr_std']:.3f}"
    sheets = sorted((study_dir / "random/lrp/sheets").glob("*.png"))
    assert sheets and (study_dir / "figures" / f"lrp_{sheets[0].stem}.png").is_file()

    md = (study_dir / "report.md").read_text(encoding="utf-8")
    assert f"| random | {lrp['accuracy']:.3f} |" in md
    assert f"| random | {rel['rr_mean']:.3f} ± {rel['rr_std']:.3f} | {rel['n']} images |" in md
    assert "## LRP" in md and "## Relative relevance" in md
    assert f"](figures/lrp_{sheets[0].stem}.png)" in md
