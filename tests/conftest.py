"""Shared fixtures: isolated places, the demo dataset, the real ASL sample, an in-process CLI."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The demo, generated once per checkout and copied into each session (git-ignored): the
#: generator's marker (version, seed, sizes) makes `ensure_demo` rebuild it when it changes.
DEMO_CACHE = REPO / ".cache" / "test-data"


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tempo-home")
    dirs = {name: base / name for name in ("data", "models", "cache", "runs")}
    for d in dirs.values():
        d.mkdir()
    return dirs


@pytest.fixture(autouse=True)
def isolated_places(
    session_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data, models and cache are shared per session (the demo is generated once);
    runs go to a fresh folder per test. No test touches the user's real folders."""
    monkeypatch.setenv("TEMPO_DATA_DIR", str(session_dirs["data"]))
    monkeypatch.setenv("TEMPO_MODEL_DIR", str(session_dirs["models"]))
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(session_dirs["cache"]))
    monkeypatch.setenv("TEMPO_RUNS_DIR", str(tmp_path / "runs"))
    for key in list(os.environ):
        if key.startswith("TEMPO_") and key not in {
            "TEMPO_DATA_DIR",
            "TEMPO_MODEL_DIR",
            "TEMPO_CACHE_DIR",
            "TEMPO_RUNS_DIR",
            "TEMPO_ASL_SAMPLE",
        }:
            monkeypatch.delenv(key)


def _write_frames(folder: Path, n: int, size: int = 32) -> Path:
    """n smoothly changing RGB frames (PNG) in `folder`: a tiny 'video'."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.random((size, size, 3))
    for i in range(n):
        img = 255 * (0.7 * np.roll(base, i, axis=1) + 0.3 * rng.random((size, size, 3)))
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="session")
def write_frames():
    """`write_frames(folder, n, size=32) -> folder`: n smoothly changing RGB frames (PNG),
    a tiny 'video' for pre-training tests."""
    return _write_frames


@pytest.fixture(scope="session")
def demo_root(session_dirs: dict[str, Path]) -> Path:
    """The demo dataset (seed 0) in the session's data dir: a copy of the checkout's cached
    build (plain copies, so a test that damages a file cannot damage the cache)."""
    from tempo_cli.data.demo import ensure_demo

    old = os.environ.get("TEMPO_DATA_DIR")
    try:
        os.environ["TEMPO_DATA_DIR"] = str(DEMO_CACHE)
        ensure_demo()  # a no-op when the cache is current
        for name in ("demo_mask", "demo"):  # demo last: ensure_demo's completeness rule
            shutil.copytree(DEMO_CACHE / name, session_dirs["data"] / name)
        os.environ["TEMPO_DATA_DIR"] = str(session_dirs["data"])
        return ensure_demo()  # checks the copy's marker; rebuilds only if it is incomplete
    finally:
        if old is None:
            del os.environ["TEMPO_DATA_DIR"]
        else:
            os.environ["TEMPO_DATA_DIR"] = old


@pytest.fixture(scope="session")
def asl_sample() -> Path:
    """The 120 real ASL photos (../shared/data/asl-sample or $TEMPO_ASL_SAMPLE)."""
    candidates = [
        REPO.parent / "shared" / "data" / "asl-sample",
        Path("/work/shared/data/asl-sample"),
    ]
    if os.environ.get("TEMPO_ASL_SAMPLE"):
        candidates.insert(0, Path(os.environ["TEMPO_ASL_SAMPLE"]))
    p = next((c for c in candidates if (c / "test").is_dir()), candidates[0])
    if not (p / "test").is_dir():
        pytest.skip(f"real ASL sample not found at {p} (set TEMPO_ASL_SAMPLE)")
    return p


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `tempo ARGS...` in-process; returns CliResult(code, out, err)."""
    from tempo_cli.cli.main import main

    def invoke(*args: str | Path) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
