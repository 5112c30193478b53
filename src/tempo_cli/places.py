"""Where data, models, caches and runs live (CLI.md "Names and places").

Environment overrides: TEMPO_DATA_DIR, TEMPO_MODEL_DIR, TEMPO_CACHE_DIR, TEMPO_RUNS_DIR.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

APP = "tempo"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Root of named datasets (`demo`, `ASL-big`, ...)."""
    return _env_path("TEMPO_DATA_DIR") or Path(user_data_dir(APP)) / "datasets"


def model_dir() -> Path:
    """Where `tempo download models` puts the model zoo and `--path NAME` looks."""
    return _env_path("TEMPO_MODEL_DIR") or Path(user_data_dir(APP)) / "models"


def cache_dir() -> Path:
    """Decoded-frame and feature caches (safe to delete)."""
    return _env_path("TEMPO_CACHE_DIR") or Path(user_cache_dir(APP))


def runs_dir() -> Path:
    """Parent of run folders: `runs/` under the current directory unless TEMPO_RUNS_DIR."""
    return _env_path("TEMPO_RUNS_DIR") or Path.cwd() / "runs"


def default_run_name(command: str) -> str:
    """`<command>-YYYYmmdd-HHMMSS`, the run folder name when `--name` is not given."""
    return f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# Bare names that mean the same dataset folder.
DATA_ALIASES = {"asl": "ASL-big", "asl-big": "ASL-big", "asl_mask": "ASL_mask"}


def resolve_data(name_or_path: str | Path) -> Path:
    """A folder or file if it exists, else a name under `data_dir()`.

    Does not check existence of the named dataset: callers decide (and `demo`
    is generated on first use by `tempo_cli.data.demo.ensure_demo`).
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    name = str(name_or_path)
    return data_dir() / DATA_ALIASES.get(name.lower(), name)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """`--path X`: X if it exists, else X in the model directory (may not exist)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    return model_dir() / str(name_or_path)


#: Backbone sources that are words, not files: `random` init and torchvision's `imagenet`.
NAMED_BASELINES = ("random", "imagenet")


def is_named_baseline(spec: str | Path) -> bool:
    """True when `spec` means the `random` or `imagenet` backbone, not a file.

    A file or folder of that name in the current directory wins (the user meant it).
    """
    return str(spec) in NAMED_BASELINES and not Path(spec).exists()
