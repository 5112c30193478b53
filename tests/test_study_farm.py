"""`torchrun --nproc-per-node 2 -m tempo_cli study` (study.farm) on CPU (gloo's store):
the units spread over the ranks, the same study.json as one process, Ctrl-C and a rerun
with another number of processes, a failing rank stopping the other; `ddp = true`: both
ranks train the one pre-training together, as `torchrun ... pretrain` would.

The study is test_study_run's tiny one (a 3-step pre-training arm `tempo` and `random`;
linear + knn at 32 px).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tempo_cli.study.collect import without_timings
from test_study_run import write_study


def _env(runs: Path) -> dict[str, str]:
    return {**os.environ, "TEMPO_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}


def _farm(config: Path, runs: Path, cwd: Path, n: int = 2) -> subprocess.Popen[str]:
    """`torchrun --standalone --nproc-per-node n -m tempo_cli study --config config`, in a
    session of its own (a Ctrl-C reaches every process of it, as from a terminal)."""
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(n), "-m", "tempo_cli", "study", "--config", str(config),
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=_env(runs), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        cwd=cwd, start_new_session=True,
    )  # fmt: skip


def _one(config: Path, runs: Path, cwd: Path) -> str:
    args = [sys.executable, "-m", "tempo_cli", "study", "--config", str(config)]
    r = subprocess.run(
        args, env=_env(runs), capture_output=True, text=True, cwd=cwd, timeout=600
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stderr


def _ranks(study_dir: Path) -> dict[str, int]:
    return {
        str(p.parent.relative_to(study_dir)): json.loads(p.read_text())["rank"]
        for p in study_dir.glob("*/*/stage.json")
    }


def _study_json(runs: Path) -> object:
    return without_timings(json.loads((runs / "tiny/study.json").read_text()), str(runs))


def test_units_wait_for_their_inputs_pretrainings_first(tmp_path: Path, demo_root: Path) -> None:
    from tempo_cli.study.farm import dependencies, unit_order
    from tempo_cli.study.runner import plan_study
    from tempo_cli.study.spec import load_study

    plan = plan_study(load_study(config=write_study(tmp_path, stages=("linear", "lrp"))))
    names = [f"{p.arm.name}/{p.stage}" for p in plan]
    deps = dependencies(plan)
    by = {names[i]: None if d is None else names[d] for i, d in enumerate(deps)}
    assert by["tempo/linear"] == "tempo/pretrain" and "tempo/classifier" not in by
    assert by["tempo/lrp"] == "tempo/linear" and by["random/lrp"] == "random/linear"
    assert by["random/linear"] is None and by["tempo/pretrain"] is None
    order = [names[i] for i in unit_order(plan)]
    assert order[0] == "tempo/pretrain"
    assert order.index("random/linear") < order.index("tempo/linear")
    assert all(order.index(by[n]) < order.index(n) for n in names if by[n] is not None)


@pytest.mark.slow
def test_two_processes_equal_one_and_an_interrupted_farm_resumes_with_one(
    tmp_path: Path, demo_root: Path
) -> None:
    config = write_study(tmp_path, stages=("linear", "knn"))
    one = tmp_path / "one"
    _one(config, one, tmp_path)

    farm = tmp_path / "farm"
    proc = _farm(config, farm, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    ranks = _ranks(farm / "tiny")
    assert set(ranks) == {
        "tempo/data", "tempo/pretrain", "tempo/linear", "tempo/knn", "random/linear",
        "random/knn",
    }  # fmt: skip
    evaluations = {rank for name, rank in ranks.items() if name.endswith(("linear", "knn"))}
    assert evaluations == {0, 1}, ranks
    assert _study_json(farm) == _study_json(one)
    assert err.count("study tiny done") == 1  # rank 0 alone writes and reports

    # Ctrl-C (to the whole session, as a terminal sends it) once the pre-training is done;
    # every worker stops with 130; one process then finishes the study.
    stopped = tmp_path / "stopped"
    proc = _farm(config, stopped, tmp_path)
    record = stopped / "tiny/tempo/pretrain/stage.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if record.is_file() and json.loads(record.read_text())["complete"]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err  # torchrun's own status
    for rank in (0, 1):  # each worker's one line (its exit 130 is torchrun's to report)
        assert re.search(rf"^tempo: error: rank {rank}: interrupted", err, re.M), err
    assert not (stopped / "tiny/study.json").exists()
    err = _one(config, stopped, tmp_path)
    assert "skip tempo pretrain: done, settings and inputs unchanged" in err
    assert _study_json(stopped) == _study_json(one)


def _broken_tree(root: Path) -> Path:
    """A class-folder tree (3 classes of 8 images, 32 px) with one file that is no image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    (root / "c" / "7.png").write_bytes(b"not an image")
    return root


@pytest.mark.slow
def test_a_failing_rank_stops_the_other_with_one_line(tmp_path: Path, demo_root: Path) -> None:
    config = write_study(tmp_path, stages=("knn",))
    tree = _broken_tree(tmp_path / "tree")
    text = config.read_text().replace('labelled = "demo"', f'labelled = "{tree}"')
    config.write_text(text.replace('samples_pc = "1,5"', 'samples_pc = "1"'))
    runs = tmp_path / "runs"
    proc = _farm(config, runs, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("tempo: error: ")]
    assert len(ours) == 2, err  # one line per rank
    failed = [line for line in ours if re.search(r"^tempo: error: rank (\d) failed in ", line)]
    assert len(failed) == 1 and "7.png" in failed[0], err
    rank = failed[0].split("rank ")[1].split()[0]
    stopped = next(line for line in ours if line not in failed)
    assert f"stopped: rank {rank} failed in " in stopped and f"rank {rank} stopped" not in stopped
    before_torchrun = err.split("torch/distributed/elastic")[0]
    assert "Traceback" not in before_torchrun
    assert not (runs / "tiny/study.json").exists()


def test_ddp_groups_are_equal_contiguous_blocks_that_split_the_batch() -> None:
    from tempo_cli.study.farm_ddp import ddp_groups

    assert ddp_groups(2, [32]) == [(0, 1)]
    assert ddp_groups(8, [256, 256]) == [(0, 1, 2, 3), (4, 5, 6, 7)]  # one machine each
    assert ddp_groups(5, [256, 256]) == [(0, 1), (2, 3)]  # rank 4 spare: equal groups
    assert ddp_groups(7, [256, 256]) == [(0, 1), (2, 3)]  # 3 does not divide 256
    assert ddp_groups(4, [6]) == [(0, 1, 2)]
    assert ddp_groups(4, [2]) == []  # >= 2 pairs per process
    assert ddp_groups(3, [32, 32]) == []  # one process each: the farm as without ddp
    assert ddp_groups(4, []) == []


def _model_tensors(path: Path) -> dict[str, Any]:
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{part}.{k}": v for part in ("backbone", "head") for k, v in saved[part].items()}


def _same_tensors(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_pretraining_on_two_ranks_equals_torchrun_pretrain(
    tmp_path: Path, demo_root: Path
) -> None:
    from tempo_cli.study.toml_text import toml_value

    config = write_study(tmp_path, stages=("knn",))
    config.write_text("ddp = true\n" + config.read_text())
    runs = tmp_path / "runs"
    proc = _farm(config, runs, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    stage = runs / "tiny/tempo/pretrain"
    record = json.loads((stage / "stage.json").read_text())
    assert record["complete"] and record["rank"] == 0 and record["ddp_ranks"] == [0, 1], record
    assert "ddp: 1 pre-training(s) on 2 processes each" in err
    assert len(list(stage.glob("events.out.tfevents.*"))) == 1  # rank 1 wrote nothing

    # The same settings through `torchrun --nproc-per-node 2 -m tempo_cli pretrain`.
    settings = json.loads((stage / "config.json").read_text())
    own = {"command", "name", "quiet", "debug", "resume", "save_model"}
    lines = [
        f"{k} = {toml_value(v)}" for k, v in settings.items() if k not in own and v is not None
    ]
    (tmp_path / "pretrain.toml").write_text("\n".join(lines) + "\n")
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "tempo_cli", "pretrain", "--config", "pretrain.toml", "--name", "plain",
    ]  # fmt: skip
    plain = tmp_path / "plain"
    r = subprocess.run(args, env=_env(plain), capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ddp = _model_tensors(stage / "model.pt")
    assert _same_tensors(ddp, _model_tensors(plain / "plain/model.pt"))

    # One process: another group size, so the pre-training reruns from its start (its
    # numbers differ: one process's BatchNorm sees the whole batch).
    err = _one(config, runs, tmp_path)
    assert "skip tempo pretrain" not in err and "resuming" not in err
    assert "skip random knn: done" in err
    assert "ddp_ranks" not in json.loads((stage / "stage.json").read_text())
    assert not _same_tensors(ddp, _model_tensors(stage / "model.pt"))
