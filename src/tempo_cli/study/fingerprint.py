"""What a finished stage was computed from, and its record `<stage folder>/stage.json`.

A stage's fingerprint is the sha256 of its resolved settings (minus the fields that say how
it runs, not what it computes) and of the content of the file it reads (the pre-training's
model.pt, the classifier.pt, the arm's checkpoint), and, for a pre-training that several
processes ran by DDP (a study's `ddp = true`), their number: its numbers depend on it. A
rerun skips a stage whose record is
complete with the same fingerprint; any other change (an option, a new model.pt) reruns it.

stage.json = {"stage", "arm", "repeat" (k or null), "fingerprint", "complete": bool,
"seconds" (wall time of the stage's last run), "skipped": reason (only when not run), "rank"
(the process that ran it, study.farm), "ddp_ranks" (a DDP pre-training's processes: only
then)}.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tempo_cli import atomic
from tempo_cli.settings.base import CommandSettings
from tempo_cli.settings.pretrain import RUNTIME_FIELDS as PRETRAIN_RUNTIME_FIELDS

STAGE_FILE = "stage.json"
#: What every command writes into its folder (report.run_dir.RunDir): its result.
METRICS_FILE = "metrics.json"
#: Settings that change how a stage runs, never what it computes: pre-training's runtime
#: fields (the widest set), but the device (its numbers differ from one device to another).
RUNTIME_FIELDS = PRETRAIN_RUNTIME_FIELDS - {"device"}
_CHUNK = 1 << 20
#: (path, size, mtime_ns) -> content hash: one arm's model.pt is read once per process.
_hashes: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path | None) -> str | None:
    """`<size>:<sha256>` of `path`'s bytes; None without a file, "missing" when absent."""
    if path is None:
        return None
    if path.is_dir():  # a model folder (`tempo export --format folder`): its weights
        path = path / "model.safetensors"
    try:
        st = path.stat()
    except OSError:
        return "missing"
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _hashes[key] = f"{st.st_size}:{digest.hexdigest()}"
    return _hashes[key]


def fingerprint(
    settings: CommandSettings, input_file: Path | None, root: Path, processes: int = 1
) -> str:
    """sha256 of the stage's settings and input content (and of the number of `processes`
    when several trained it together); paths under `root` (the runs folder) are written
    relative to it, so a moved runs folder keeps its fingerprints."""
    values = {k: v for k, v in settings.to_json_dict().items() if k not in RUNTIME_FIELDS}
    text = json.dumps(values, sort_keys=True, default=str).replace(str(root), "<runs>")
    key: dict[str, Any] = {"settings": text, "input": file_hash(input_file)}
    if processes > 1:  # one process keeps the fingerprints of before `ddp` existed
        key["processes"] = processes
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_record(folder: Path) -> dict[str, Any] | None:
    """The stage's stage.json, None when absent or unreadable (then it simply reruns)."""
    try:
        record = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic.write_json(folder / STAGE_FILE, record)


def is_done(record: dict[str, Any] | None, fp: str, folder: Path) -> bool:
    """Complete, same fingerprint, and its metrics.json there (or recorded as skipped)."""
    if record is None or not record.get("complete") or record.get("fingerprint") != fp:
        return False
    return "skipped" in record or (folder / METRICS_FILE).is_file()
