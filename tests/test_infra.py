"""Places, atomic writes, the run folder and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from tempo_cli import atomic, places
from tempo_cli.report.run_dir import RunDir
from tempo_cli.settings import CommandSettings, load_settings


def test_places_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("TEMPO_MODEL_DIR", str(tmp_path / "m"))
    assert places.data_dir() == tmp_path / "d"
    assert places.resolve_data("asl") == tmp_path / "d" / "ASL-big"
    assert places.resolve_checkpoint("tempo.pth") == tmp_path / "m" / "tempo.pth"
    existing = tmp_path / "x.pth"
    existing.write_bytes(b"")
    assert places.resolve_checkpoint(existing) == existing


def test_places_default_to_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("TEMPO_DATA_DIR", "TEMPO_MODEL_DIR", "TEMPO_CACHE_DIR", "TEMPO_RUNS_DIR"):
        monkeypatch.delenv(v, raising=False)
    assert places.data_dir().name == "datasets" and "tempo" in str(places.data_dir())
    assert places.model_dir().name == "models"
    assert places.runs_dir() == Path.cwd() / "runs"


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    atomic.write_json(p, {"a": 1})
    with pytest.raises(RuntimeError), atomic.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(p.read_text()) == {"a": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    """Not mkstemp's 0600: a lab group or web server must read config/metrics/PNG/.pt."""
    import torch

    old = os.umask(umask)
    try:
        atomic.write_json(tmp_path / "metrics.json", {"a": 1})
        atomic.torch_save({"w": torch.zeros(1)}, tmp_path / "last.pt")
        with atomic.atomic_path(tmp_path / "fig.png") as tmp:
            tmp.write_bytes(b"png")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (tmp_path / "plain").stat().st_mode & 0o777 == want
    for name in ("metrics.json", "last.pt", "fig.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name


class RunSettings(CommandSettings):
    command: ClassVar[str] = "toy"
    lr: float = 0.1


def test_run_dir_writes_config_metrics_tensorboard_and_png(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = load_settings(RunSettings, {"name": "r1"})
    with RunDir(s) as run:
        run.save_config(s)
        run.update_metrics(a=1)
        run.update_metrics(b=[1, 2])
        tb = run.tensorboard("5")
        assert tb is not None
        tb.add_scalar("accuracy", 0.5, 1)
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        run.save_figure(fig, "curve.png")
    root = Path(os.environ["TEMPO_RUNS_DIR"]) / "r1"
    assert json.loads((root / "config.json").read_text())["lr"] == 0.1
    assert json.loads((root / "metrics.json").read_text()) == {"a": 1, "b": [1, 2]}
    assert any(p.name.startswith("events.out.tfevents") for p in (root / "5").iterdir())
    assert (root / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_dir_disabled_writes_nothing(tmp_path: Path) -> None:
    s = load_settings(RunSettings, {"name": "r2"})
    run = RunDir(s, root=tmp_path / "r2", enabled=False)
    run.save_config(s)
    run.update_metrics(a=1)
    assert run.tensorboard() is None
    assert not (tmp_path / "r2").exists()


def test_cli_version_help_and_usage_errors(cli) -> None:
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("tempo ")
    r = cli("--help")
    assert r.code == 0 and "Usage" in r.out
    r = cli("no-such-command")
    assert r.code == 2 and "no-such-command" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_console_script_runs_without_traceback() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tempo_cli", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("tempo: error:")
