"""The study report: collect (stage folders -> study.json dict), report.html, report.md.

The slow tests build a real two-arm study's stage folders with the real commands (`tempo
eval linear` with an lr grid and `tempo eval knn`, random and checkpoint backbones at 32 px)
and check the report against the stages' own metrics.json. The fast tests write small
metrics.json files in the commands' format to cover gains, best per column, repeats,
absent and skipped stages, and escaping.
"""

from __future__ import annotations

import json
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tempo_cli.study import collect
from tempo_cli.study.runner import write_reports
from tempo_cli.study.spec import Arm, Study

SCRIPT_ARM = "<script>alert(1)</script>"
IMG_PATH = '"><img src=x onerror=alert(1)>'


def _study(arms: list[Arm], baseline: str, name: str = "st", data: str = "demo") -> Study:
    return Study(
        name=name,
        origin=f"/tmp/{IMG_PATH}/study.toml",
        data=data,
        labelled="demo",
        backbone="resnet18",
        image_size=32,
        seed=0,
        device="cpu",
        stages=("linear", "knn", "relevance", "noise"),
        arms=tuple(arms),
        baseline=baseline,
        classifier_samples_pc="full",
        stage_options={"linear": {"samples_pc": "1,full", "lr": "0.01,0.1"}},
    )


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _stage_json(folder: Path, stage: str, arm: str, complete: bool = True, **extra: Any) -> None:
    _write(
        folder / "stage.json",
        {
            "stage": stage,
            "arm": arm,
            "repeat": None,
            "fingerprint": "f",
            "complete": complete,
            "seconds": 1.5,
            **extra,
        },
    )


def _record(spc: int | None, lr: float | None, mean: float, std: float, selected: bool) -> dict:
    """A `results` record as `tempo eval linear` writes it (the keys the report reads)."""
    rec = {
        "checkpoint": "x",
        "samples_pc": spc,
        "runs": 3,
        "accuracy_final_mean": mean,
        "accuracy_final_std": std,
        "protocol": "linear",
        "seconds": 0.5,
    }
    if lr is not None:
        rec.update(lr=lr, selected=selected, selected_on="val")
    return rec


def _linear(folder: Path, arm: str, cells: dict[int | None, tuple[float, float]]) -> None:
    """A linear stage with an lr grid {0.01, 0.1}: the given (mean, std) at the chosen lr
    0.1, and mean - 0.05 at the reference lr 0.01."""
    results = []
    for spc, (mean, std) in cells.items():
        results.append(_record(spc, 0.01, round(mean - 0.05, 6), std, False))
        results.append(_record(spc, 0.1, mean, std, True))
    _write(
        folder / "metrics.json", {"protocol": "linear", "results": results, "selected_on": "val"}
    )
    _stage_json(folder, "linear", arm)


# --- fast: synthetic stage folders ------------------------------------------------------


def test_gains_best_per_column_and_lr_view(tmp_path: Path) -> None:
    arms = [Arm("tempo", "tempo", "pretrain"), Arm("random", "random", "random")]
    _linear(tmp_path / "tempo/linear", "tempo", {1: (0.5, 0.01), 5: (0.6, 0.02), None: (0.7, 0.0)})
    _linear(
        tmp_path / "random/linear", "random", {1: (0.2, 0.03), 5: (0.65, 0.01), None: (0.3, 0.0)}
    )
    data = collect.collect_study(_study(arms, "random"), tmp_path)
    h = data["headline"]
    assert h["columns"] == ["1", "5", "full"] and h["baseline"] == "random"
    tempo, random = h["rows"]
    assert tempo["cells"]["1"] == {"mean": 0.5, "std": 0.01, "n": 3, "lr": 0.1}
    assert tempo["gains"] == {
        "1": pytest.approx(30.0),
        "5": pytest.approx(-5.0),
        "full": pytest.approx(40.0),
    }
    assert random["gains"] == {"1": 0.0, "5": 0.0, "full": 0.0}
    assert h["best"] == {"1": ["tempo"], "5": ["random"], "full": ["tempo"]}
    assert h["over"] == "3 probe runs"
    lr = data["lr"]
    assert lr["reference_lr"] == 0.01
    assert lr["rows"][0]["cells"]["1"]["reference"]["mean"] == 0.45
    assert lr["rows"][0]["selected_on"] == "val"
    assert lr["order"]["5"] == {"reference": ["random", "tempo"], "chosen": ["random", "tempo"]}
    page = write_reports(tmp_path, data).read_text()
    assert "+30.0 pts" in page and "-5.0 pts" in page and "0.500 ± 0.010" in page
    md = (tmp_path / "report.md").read_text()
    assert "**0.500 ± 0.010 (+30.0)**" in md and "| 0.600 ± 0.020 (-5.0) |" in md


def test_repeats_are_averaged_and_said_so(tmp_path: Path) -> None:
    arms = [Arm("tempo", "tempo", "pretrain", repeats=2), Arm("random", "random", "random")]
    _linear(tmp_path / "tempo/seed-0/linear", "tempo", {1: (0.4, 0.01)})
    _linear(tmp_path / "tempo/seed-1/linear", "tempo", {1: (0.6, 0.03)})
    _linear(tmp_path / "random/linear", "random", {1: (0.2, 0.02)})
    model = tmp_path / "tempo/seed-1/pretrain/model.pt"
    _write(tmp_path / "tempo/seed-1/linear/config.json", {"path": [str(model)], "quiet": True})
    data = collect.collect_study(_study(arms, "random"), tmp_path)
    # settings paths inside the study folder are relative to it; runtime keys are left out
    config = data["arms"]["tempo"]["runs"][1]["stages"]["linear"]["config"]
    assert config == {"path": ["tempo/seed-1/pretrain/model.pt"]}
    tempo = data["headline"]["rows"][0]
    assert tempo["over"] == "2 pre-trainings"
    assert tempo["cells"]["1"] == {"mean": 0.5, "std": 0.1, "n": 2, "lr": 0.1}
    assert data["headline"]["over"] == "2 pre-trainings; 3 probe runs"
    assert [r["repeat"] for r in data["arms"]["tempo"]["runs"]] == [0, 1]


def test_absent_incomplete_and_skipped_stages(tmp_path: Path) -> None:
    arms = [
        Arm("tempo", "tempo", "pretrain"),
        Arm("random", "random", "random"),
        Arm("never-ran", "never-ran", "imagenet"),
    ]
    _linear(tmp_path / "tempo/linear", "tempo", {1: (0.5, 0.01)})
    _linear(tmp_path / "random/linear", "random", {1: (0.2, 0.03)})
    _stage_json(tmp_path / "random/linear", "linear", "random", complete=False)  # interrupted
    _stage_json(tmp_path / "tempo/relevance", "relevance", "tempo", skipped="no hand masks")
    _write(
        tmp_path / "tempo/noise/metrics.json",
        {
            "models": [{"name": "classifier", "accuracy_by_level": {"0": 0.5, "0.1": 0.25}}],
            "levels": [0.0, 0.1],
        },
    )
    data = collect.collect_study(_study(arms, "random"), tmp_path)
    assert [r["arm"] for r in data["headline"]["rows"]] == ["tempo"]
    assert data["headline"]["baseline"] is None  # the baseline's linear stage did not finish
    assert data["headline"]["rows"][0]["gains"] == {"1": None}
    assert data["relevance"] == {"rows": [{"arm": "tempo", "skipped": "no hand masks"}]}
    assert data["noise"]["levels"] == ["0", "0.1"]
    assert data["noise"]["rows"][0]["accuracy"]["0.1"] == {"mean": 0.25, "std": None, "n": 1}
    assert not {"knn", "semisup", "segment", "lrp", "pretrain"} & set(data)
    assert data["arms"]["never-ran"]["runs"][0]["stages"] == {}
    write_reports(tmp_path, data)
    json.dumps(data)  # JSON-able


def test_timings_only_under_timing_keys(tmp_path: Path) -> None:
    """Dropping every `seconds` / `*_seconds` / `pairs_per_s` key leaves no wall time."""
    arms = [Arm("tempo", "tempo", "pretrain"), Arm("random", "random", "random")]
    _linear(tmp_path / "tempo/linear", "tempo", {1: (0.5, 0.01)})
    _linear(tmp_path / "random/linear", "random", {1: (0.2, 0.03)})
    _write(
        tmp_path / "tempo/pretrain/metrics.json",
        {"epochs": [{"epoch": 1, "loss": 9.0, "pairs_per_s": 88.1, "steps": 6}]},
    )
    data = collect.collect_study(_study(arms, "random"), tmp_path)
    assert data["pretrain"]["rows"][0]["epochs"] == [{"epoch": 1, "loss": 9.0, "pairs_per_s": 88.1}]
    assert 1.5 not in list(_numbers(_drop_timings(data)))
    assert 1.5 in list(_numbers(data))


def _drop_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _drop_timings(v)
            for k, v in obj.items()
            if not (k == "seconds" or k.endswith("_seconds") or k == "pairs_per_s")
        }
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def _numbers(obj: Any) -> Any:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    arms = [Arm(SCRIPT_ARM, "script-alert-1-script", "pretrain"), Arm("random", "random", "random")]
    _linear(tmp_path / "script-alert-1-script/linear", SCRIPT_ARM, {1: (0.5, 0.01)})
    _linear(tmp_path / "random/linear", "random", {1: (0.2, 0.03)})
    config = {"command": "eval-linear", "path": [f"/x/{IMG_PATH}/model.pt"], "data": IMG_PATH}
    _write(tmp_path / "random/linear/config.json", config)
    data = collect.collect_study(_study(arms, "random", data=IMG_PATH), tmp_path)
    _check_escaped(tmp_path, data)


# --- the checks on a report -------------------------------------------------------------


class _Parsed(HTMLParser):
    """Every start tag with its attributes, every text node, and the headline cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.cells: list[dict[str, Any]] = []
        self._cell: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "td" and a.get("data-table") == "headline":
            self._cell = {**a, "text": ""}
            self.cells.append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def _parse(page: str) -> _Parsed:
    p = _Parsed()
    p.feed(page)
    p.close()
    return p


def _check_escaped(study_dir: Path, data: dict[str, Any]) -> None:
    page = write_reports(study_dir, data).read_text()
    parsed = _parse(page)
    assert "script" not in {tag for tag, _ in parsed.tags}
    assert "img" not in {tag for tag, a in parsed.tags if a.get("src") == "x"}
    for tag, attrs in parsed.tags:
        assert not [k for k in attrs if k.lower().startswith("on")], (tag, attrs)
    text = "".join(parsed.text)
    assert SCRIPT_ARM in text and IMG_PATH in text  # shown as text
    md = (study_dir / "report.md").read_text()
    assert "<script" not in md.lower() and "<img" not in md.lower()
    assert "&lt;script&gt;alert\\(1\\)" in md or "&lt;script&gt;alert(1)" in md


def _check_no_external_url(page: str) -> None:
    for tag, attrs in _parse(page).tags:
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            value = (attrs.get(key) or "").strip().lower()
            assert (
                not value or value.startswith("data:image/png;base64,") or value.startswith("#")
            ), (tag, key, value[:80])
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?//""", page, re.I)


# --- slow: a real study's stage folders ---------------------------------------------------


def _tempo(*args: str | Path) -> None:
    from tempo_cli.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert not e.code, f"tempo {' '.join(map(str, args))} exited {e.code}"


@pytest.fixture(scope="module")
def real_study(
    demo_root: Path, session_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Study, Path]:
    """Two arms (random init, the baseline; and a checkpoint in a folder named IMG_PATH,
    the arm named SCRIPT_ARM), each with a linear stage (lr grid, 1 and full samples per
    class) and a knn stage, run by the real commands into runs/st/<arm>/<stage>/."""
    import torch
    import torchvision

    base = tmp_path_factory.mktemp("study")
    ckpt = base / IMG_PATH / "r18.pth"
    ckpt.parent.mkdir()
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    arms = [
        Arm("random", "random", "random"),
        Arm(SCRIPT_ARM, "script-alert-1-script", "checkpoint", checkpoint=str(ckpt)),
    ]
    common = (
        "--data",
        "demo",
        "--samples-pc",
        "1,full",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--quiet",
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, d in session_dirs.items():
            mp.setenv(f"TEMPO_{key.upper()}_DIR", str(d))
        mp.setenv("TEMPO_RUNS_DIR", str(base / "runs"))
        for arm, path in zip(arms, ("random", ckpt), strict=True):
            _tempo(
                "eval",
                "linear",
                "--path",
                path,
                "--name",
                f"st/{arm.folder}/linear",
                "--runs",
                "2",
                "--iterations",
                "5",
                "--lr",
                "0.01,0.1",
                *common,
            )
            _tempo("eval", "knn", "--path", path, "--name", f"st/{arm.folder}/knn", *common)
            for stage in ("linear", "knn"):
                _stage_json(base / "runs/st" / arm.folder / stage, stage, arm.name)
    return _study(arms, "random", data=IMG_PATH), base / "runs/st"


@pytest.mark.slow
def test_real_study_headline_matches_metrics(real_study: tuple[Study, Path]) -> None:
    study, study_dir = real_study
    data = collect.collect_study(study, study_dir)
    page = write_reports(study_dir, data).read_text()
    cells = _parse(page).cells
    assert len(cells) == 2 * 2  # arms x columns
    for arm in study.arms:
        metrics = json.loads((study_dir / arm.folder / "linear/metrics.json").read_text())
        chosen = [r for r in metrics["results"] if r["selected"]]
        assert len(chosen) == 2 and len(metrics["results"]) == 4  # 2 columns x 2 lrs
        for rec in chosen:
            col = "full" if rec["samples_pc"] is None else str(rec["samples_pc"])
            (cell,) = [c for c in cells if c["data-arm"] == arm.name and c["data-col"] == col]
            assert float(cell["data-mean"]) == rec["accuracy_final_mean"]
            assert float(cell["data-std"]) == rec["accuracy_final_std"]
            assert int(cell["data-n"]) == rec["runs"] == 2
            mean, std = re.match(r"\s*([0-9.]+) ± ([0-9.]+)", cell["text"]).groups()  # type: ignore[union-attr]
            assert mean == f"{rec['accuracy_final_mean']:.3f}"
            assert std == f"{rec['accuracy_final_std']:.3f}"
            base = next(
                r
                for r in json.loads((study_dir / "random/linear/metrics.json").read_text())[
                    "results"
                ]
                if r["selected"] and r["samples_pc"] == rec["samples_pc"]
            )
            gain = 100 * (rec["accuracy_final_mean"] - base["accuracy_final_mean"])
            if arm.name != "random":
                assert float(cell["data-gain"]) == pytest.approx(gain, abs=1e-4)
                assert f"{gain:+.1f} pts" in cell["text"]
    for col in ("1", "full"):
        means = {c["data-arm"]: float(c["data-mean"]) for c in cells if c["data-col"] == col}
        best = {c["data-arm"] for c in _best_cells(page, col)}
        assert best == {a for a, m in means.items() if m == max(means.values())}
    assert (
        data["knn"]["rows"][1]["cells"]["1"]["mean"]
        == json.loads((study_dir / "script-alert-1-script/knn/metrics.json").read_text())[
            "results"
        ][0]["accuracy_final_mean"]
    )
    _check_no_external_url(page)
    assert "data:image/png;base64," in page  # the figures are embedded
    assert (study_dir / "figures/accuracy_vs_samples.png").is_file()
    _check_escaped(study_dir, data)
    md = (study_dir / "report.md").read_text()
    assert "](figures/accuracy_vs_samples.png)" in md
    assert "](script-alert-1-script/linear/curves.png)" in md
    assert not re.search(r"\]\((https?:)?//", md)


def _best_cells(page: str, col: str) -> list[dict[str, Any]]:
    out = []
    for tag, a in _parse(page).tags:
        mine = tag == "td" and a.get("data-table") == "headline" and a.get("data-col") == col
        if mine and "best" in (a.get("class") or "").split():
            out.append(a)
    return out


@pytest.mark.slow
def test_real_study_intervals_equal_a_recomputation_from_the_kept_predictions(
    real_study: tuple[Study, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """study.json's intervals, the verdicts atop both reports and after the printed
    headline: the same as recomputed here from each stage's predictions.npz."""
    from tempo_cli.evaluate.intervals import Comparison, verdicts
    from tempo_cli.evaluate.paired_bootstrap import arm_data, holm, paired_interval
    from tempo_cli.evaluate.predictions import find_result, read_predictions
    from tempo_cli.study.runner import finish

    study, study_dir = real_study
    data = finish(study, study_dir, quiet=True)
    printed = capsys.readouterr().out
    arm = study.arms[1]
    for key, stage in (("headline", "linear"), ("knn", "knn")):
        got = data[key]["intervals"]
        mine = read_predictions(study_dir / arm.folder / stage)
        base = read_predictions(study_dir / "random" / stage)
        intervals = [
            paired_interval(
                arm_data([find_result(mine, None, sp)]), arm_data([find_result(base, None, sp)])
            )
            for sp in (1, None)
        ]
        calls = holm([iv.p_value for iv in intervals])
        want = [
            Comparison(arm.name, "random", sp, iv, call)
            for sp, iv, call in zip((1, None), intervals, calls, strict=True)
        ]
        assert [{k: v for k, v in c.items() if k != "column"} for c in got["comparisons"]] == [
            c.to_dict() for c in want
        ]
        assert [c["column"] for c in got["comparisons"]] == ["1", "full"]
        assert got["verdicts"] == verdicts(want) and len(want[0].interval.sources) == 4
        assert "pre-training seed not covered: 1 pre-training" in got["method"]
    assert (
        json.loads((study_dir / "study.json").read_text())["headline"]["intervals"]
        == (data["headline"]["intervals"])
    )
    sentences = data["headline"]["intervals"]["verdicts"]
    assert sentences[0].startswith(f"At 1 labelled image per class, {SCRIPT_ARM} is ")
    page = (study_dir / "report.html").read_text()
    top = page.index("<h1>")
    for s in sentences:
        assert page.index(f"<p class='verdict'>{escape(s)}</p>") < page.index("<table", top)
        assert " ".join(s.split()) in " ".join(printed.split())
    md = (study_dir / "report.md").read_text()
    assert md.index("**At 1 labelled image per class") < md.index("- origin:")
    assert "95% interval" in md and "Holm-corrected" in md
    _check_escaped(study_dir, data)


def test_a_single_run_shows_no_spread_and_the_loss_ticks_whole_epochs() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tempo_cli.study import figures
    from tempo_cli.study.report_models import accuracy_model

    one = {"mean": 0.25, "std": 0.0, "n": 1}
    table = {
        "columns": ["1"],
        "baseline": None,
        "over": "1 probe run",
        "rows": [{"arm": "a", "cells": {"1": one}, "gains": {"1": None}}],
        "best": {"1": ["a"]},
    }
    model = accuracy_model(table, "knn")
    assert model.rows[0].cells[0].text == "0.250"
    assert "±" not in model.caption and "one probe run" in model.caption
    table["rows"][0]["cells"]["1"] = {"mean": 0.25, "std": 0.01, "n": 2}
    table["over"] = "2 probe runs"
    model = accuracy_model(table, "knn")
    assert model.rows[0].cells[0].text == "0.250 ± 0.010" and "± std" in model.caption

    epochs = [{"epoch": e, "loss": 10.0 / e} for e in (1, 2, 3)]
    fig = figures.loss_plot({"rows": [{"arm": "a", "repeat": None, "epochs": epochs}]}, "loss")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
