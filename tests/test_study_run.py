"""`tempo study` running: planning, stage folders, skip/resume/force, Ctrl-C, shared features.

The study files here are tiny (resnet18 at 32 px, 3 pre-training steps, 2 probe runs of 30
iterations); the file validation itself is tested in test_study_spec.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tempo_cli.study.collect import without_timings

STUDY = """\
data = "demo"
labelled = "demo"
backbone = "resnet18"
image_size = {image_size}
stages = {stages}
baseline = "random"
classifier_samples_pc = "5"

[pretrain]
init = "random"
epochs = 1
max_steps = 3
batch_size = 32
optimizer = "adamw"
monitor = "none"

[linear]
samples_pc = "1,5"
runs = 2
iterations = 30

[knn]
samples_pc = "1,5"

[noise]
figures = 0
levels = "0,0.3"

[arms.tempo]
pretrain = {{ proximity = {proximity} }}

[arms.random]
source = "random"
"""


def write_study(
    folder: Path,
    stages: tuple[str, ...] = ("linear", "knn", "noise"),
    proximity: int = 5,
    image_size: int = 32,
) -> Path:
    """runs/tiny/ study file: a pre-training arm `tempo` and `random` (the baseline)."""
    path = folder / "tiny.toml"
    text = STUDY.format(stages=json.dumps(list(stages)), proximity=proximity, image_size=image_size)
    path.write_text(text, encoding="utf-8")
    return path


def records(study_dir: Path) -> dict[str, str]:
    """`<arm>/<stage>` -> the text of its stage.json."""
    return {
        str(p.parent.relative_to(study_dir)): p.read_text(encoding="utf-8")
        for p in sorted(study_dir.glob("*/*/stage.json"))
    }


def feature_files() -> set[str]:
    return {p.name for p in (Path(os.environ["TEMPO_CACHE_DIR"]) / "features").glob("*.pt")}


# --- planning: nothing written on bad options -------------------------------------------


def test_stage_option_error_found_while_planning_writes_nothing(
    cli, tmp_path: Path, demo_root: Path
) -> None:
    # 2000 px passes the study file's checks (pre-training takes up to 4096 px) but not the
    # linear probe's (up to 1024): found only when the stages' settings are built.
    config = write_study(tmp_path, stages=("linear",), image_size=2000)
    r = cli("study", "--config", config)
    assert r.code == 2
    assert "image_size" in r.err and "2000" in r.err and "linear" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (Path(os.environ["TEMPO_RUNS_DIR"]) / "tiny").exists()


def test_force_of_a_stage_the_study_does_not_run_writes_nothing(
    cli, tmp_path: Path, demo_root: Path
) -> None:
    config = write_study(tmp_path, stages=("linear",))
    r = cli("study", "--config", config, "--force", "semisup")
    assert r.code == 2
    assert "--force" in r.err and "semisup" in r.err
    assert not (Path(os.environ["TEMPO_RUNS_DIR"]) / "tiny").exists()


def test_plan_names_every_stage_folder_and_input(tmp_path: Path, demo_root: Path) -> None:
    from tempo_cli import places
    from tempo_cli.study.runner import plan_study
    from tempo_cli.study.spec import load_study

    plan = plan_study(load_study(config=write_study(tmp_path)))
    runs = places.runs_dir()
    assert [(p.arm.name, p.stage) for p in plan] == [
        ("tempo", "data"),  # once a study: the labelled data and its checks
        ("tempo", "pretrain"),
        ("tempo", "linear"),  # its probe at 5 per class is the classifier: no classifier stage
        ("tempo", "knn"),
        ("tempo", "noise"),
        ("random", "linear"),
        ("random", "knn"),
        ("random", "noise"),
    ]
    by = {(p.arm.name, p.stage): p.settings for p in plan}
    model = str(runs / "tiny/tempo/pretrain/model.pt")
    assert by["tempo", "linear"].path == [model] and by["tempo", "knn"].path == [model]
    assert by["random", "knn"].path == ["random"]
    assert by["tempo", "noise"].path == str(runs / "tiny/tempo/linear/classifier.pt")
    assert by["tempo", "noise"].attack == "noise"
    assert (
        by["tempo", "linear"].samples_pc == "1,5" and by["tempo", "linear"].save_samples_pc == "5"
    )
    assert by["tempo", "linear"].save_model == str(runs / "tiny/tempo/linear/classifier.pt")
    assert by["tempo", "pretrain"].name == "tiny/tempo/pretrain"
    assert by["tempo", "pretrain"].proximity == 5 and by["tempo", "pretrain"].image_size == 32
    assert not (runs / "tiny").exists()


@pytest.mark.parametrize(
    "edit",
    [
        ("[noise]", "[classifier]\nruns = 1\n\n[noise]"),  # a probe of its own
        ('classifier_samples_pc = "5"', 'classifier_samples_pc = "full"'),  # not swept
        ("[knn]", "resample_labels = true\n\n[knn]"),  # linear draws 5 per class per run
    ],
)
def test_classifier_stage_stays_when_linear_does_not_train_its_probe(
    tmp_path: Path, edit: tuple[str, str]
) -> None:
    from tempo_cli import places
    from tempo_cli.study.runner import plan_study
    from tempo_cli.study.spec import load_study

    config = write_study(tmp_path)
    config.write_text(config.read_text().replace(*edit, 1), encoding="utf-8")
    plan = plan_study(load_study(config=config))
    by = {(p.arm.name, p.stage): p.settings for p in plan}
    classifier = str(places.runs_dir() / "tiny/random/classifier/classifier.pt")
    assert by["random", "classifier"].save_model == classifier
    assert by["random", "noise"].path == classifier
    assert by["random", "linear"].save_model is None
    assert by["random", "linear"].save_samples_pc is None


def test_fingerprint_ignores_how_a_stage_runs_but_not_its_input(tmp_path: Path) -> None:
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.evaluate import EvalKnnSettings
    from tempo_cli.study.fingerprint import fingerprint

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    a = load_settings(EvalKnnSettings, {"path": [str(model)], "name": "a", "quiet": True})
    b = load_settings(EvalKnnSettings, {"path": [str(model)], "name": "b"})
    c = load_settings(EvalKnnSettings, {"path": [str(model)], "k": 5})
    assert fingerprint(a, model, tmp_path) == fingerprint(b, model, tmp_path)
    assert fingerprint(a, model, tmp_path) != fingerprint(c, model, tmp_path)
    before = fingerprint(a, model, tmp_path)
    model.write_bytes(b"other weights")
    assert fingerprint(a, model, tmp_path) != before


# --- running: skip, force, arm changes, shared features ---------------------------------


@pytest.mark.slow
def test_rerun_skips_force_redoes_one_stage_and_arm_change_reruns_that_arm(
    cli, tmp_path: Path, demo_root: Path
) -> None:
    study_dir = Path(os.environ["TEMPO_RUNS_DIR"]) / "tiny"
    config = write_study(tmp_path, stages=("linear",))
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    assert (study_dir / "study.toml").is_file() and (study_dir / "study.json").is_file()
    # the study's stages keep their predictions: the headline's verdicts, printed and kept
    verdicts = json.loads((study_dir / "study.json").read_text())["headline"]["intervals"]
    assert len(verdicts["verdicts"]) == 2 and verdicts["verdicts"][0] in r.out
    assert "[1/4] tempo data" in r.err and "[2/4] tempo pretrain" in r.err
    assert "] skip " not in r.err
    linear_features = feature_files()

    # Adding knn runs only knn, from the features linear extracted (no new cache entry).
    write_study(tmp_path, stages=("linear", "knn"))
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    for arm, stage in (("tempo", "pretrain"), ("tempo", "linear"), ("random", "linear")):
        assert f"skip {arm} {stage}: done, settings and inputs unchanged" in r.err
    assert "tempo knn ·" in r.err and "random knn ·" in r.err
    assert feature_files() == linear_features
    done = records(study_dir)
    assert set(done) == {
        "tempo/data", "tempo/pretrain", "tempo/linear", "tempo/knn", "random/linear",
        "random/knn",
    }  # fmt: skip

    # A finished study reruns nothing.
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    assert r.err.count("] skip ") == 6 and " · elapsed" not in r.err
    assert records(study_dir) == done

    # --force knn redoes knn of every arm, nothing else.
    r = cli("study", "--config", config, "--force", "knn")
    assert r.code == 0, r.err
    after = records(study_dir)
    assert {k for k in done if after[k] != done[k]} == {"tempo/knn", "random/knn"}
    done = after

    # Another pre-training for `tempo`: its stages rerun, `random`'s stay.
    write_study(tmp_path, stages=("linear", "knn"), proximity=3)
    r = cli("study", "--config", config)
    assert r.code == 0, r.err
    after = records(study_dir)
    assert {k for k in done if after[k] != done[k]} == {
        "tempo/pretrain",
        "tempo/linear",
        "tempo/knn",
    }
    assert "skip random linear" in r.err and "skip random knn" in r.err
    config_json = json.loads((study_dir / "tempo/pretrain/config.json").read_text())
    assert config_json["proximity"] == 3


# --- Ctrl-C and the rerun that continues ------------------------------------------------


def _study(config: Path, runs: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TEMPO_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "tempo_cli", "study", "--config", str(config)]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, cwd=cwd)


@pytest.mark.slow
def test_sigint_after_first_pretraining_then_rerun_equals_uninterrupted_run(
    tmp_path: Path, demo_root: Path
) -> None:
    config = write_study(tmp_path)
    runs = tmp_path / "interrupted"
    proc = _study(config, runs, tmp_path)
    record = runs / "tiny/tempo/pretrain/stage.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if record.is_file() and json.loads(record.read_text())["complete"]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rerun the same command" in err
    assert not (runs / "tiny/study.json").exists()
    unfinished = [
        p for p in runs.glob("tiny/*/*/stage.json") if not json.loads(p.read_text())["complete"]
    ]
    assert len(unfinished) <= 1  # the stage Ctrl-C stopped (none: it came between two)

    rerun = _study(config, runs, tmp_path)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "skip tempo pretrain: done, settings and inputs unchanged" in err
    for stopped in unfinished:  # the stopped stage ran again
        assert f"tempo {stopped.parent.name} ·" in err

    clean_runs = tmp_path / "clean"
    clean = _study(config, clean_runs, tmp_path)
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err
    got = json.loads((runs / "tiny/study.json").read_text())
    want = json.loads((clean_runs / "tiny/study.json").read_text())
    assert without_timings(got, str(runs)) == without_timings(want, str(clean_runs))
    assert got["headline"]["rows"] and got["noise"]["rows"]


@pytest.mark.slow
def test_sigint_during_pretraining_then_rerun_resumes_from_last_pt(
    tmp_path: Path, demo_root: Path
) -> None:
    config = write_study(tmp_path, stages=("knn",))
    text = config.read_text().replace("max_steps = 3", "max_steps = 12\ncheckpoint_minutes = 0.001")
    config.write_text(text)  # last.pt after every step: Ctrl-C always finds one
    runs = tmp_path / "runs"
    proc = _study(config, runs, tmp_path)
    last = runs / "tiny/tempo/pretrain/last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not json.loads((runs / "tiny/tempo/pretrain/stage.json").read_text())["complete"]

    rerun = _study(config, runs, tmp_path)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"resuming tempo pretrain from {last}" in err
    metrics = json.loads((runs / "tiny/tempo/pretrain/metrics.json").read_text())
    assert metrics["steps"] == 12
    assert json.loads((runs / "tiny/tempo/pretrain/stage.json").read_text())["complete"]


def test_a_stage_that_swallowed_ctrl_c_is_not_recorded_complete(tmp_path: Path) -> None:
    """A command that catches the KeyboardInterrupt somewhere inside (a library's bare
    `except`) and returns normally: the study stops, and the stage stays incomplete, so the
    rerun runs it again rather than skip it as done."""
    from tempo_cli.errors import Interrupted
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.evaluate import EvalKnnSettings
    from tempo_cli.study import fingerprint as fp
    from tempo_cli.study.runner import PlannedStage, run_plan
    from tempo_cli.study.spec import Arm
    from tempo_cli.study.stages import Stage

    class Swallowing(Stage[EvalKnnSettings]):
        def run(self, settings: EvalKnnSettings) -> dict[str, Any]:
            try:
                signal.raise_signal(signal.SIGINT)
                time.sleep(5)  # not reached: the handler raises at the next bytecode
            except KeyboardInterrupt:
                pass
            return {}

    stage = Swallowing("swallow", EvalKnnSettings, "never.imported:run")
    settings = load_settings(EvalKnnSettings, {"path": ["random"], "name": "t/a/swallow"})
    folder = tmp_path / "swallow"
    plan = [PlannedStage(stage, Arm("a", "a", "random"), None, folder, settings)]
    with pytest.raises(Interrupted, match="interrupted in a swallow"):
        run_plan(plan, frozenset(), quiet=True)
    record = fp.read_record(folder)
    assert record is not None and record["complete"] is False


def test_time_left_counts_each_stage_as_that_stage_took() -> None:
    from tempo_cli.study.runner import Clock, PlannedStage
    from tempo_cli.study.spec import Arm
    from tempo_cli.study.stages import STAGES

    arm = Arm("a", "a", "pretrain")
    plan = [
        PlannedStage(STAGES[s], arm, None, Path("."), None)  # type: ignore[arg-type]
        for s in ("pretrain", "linear", "knn", "pretrain", "linear", "knn")
    ]
    clock = Clock()
    assert clock.left(plan) is None  # nothing ran: no estimate
    clock.ran = {"pretrain": [100.0]}
    assert clock.left(plan[1:]) is None  # no evaluation stage ran yet
    clock.ran = {"pretrain": [100.0], "linear": [10.0]}
    # knn not seen yet: as long as the evaluation stages seen (10 s)
    assert clock.left(plan[2:]) == 10.0 + 100.0 + 10.0 + 10.0
    assert "about 2:10 left" in clock.line(3, plan)
