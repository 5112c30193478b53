"""Manifest CSV files: `path,label[,split][,group]`, one labelled image a row.

The header names the columns (any order; `path` and `label` required). Paths are relative to
the manifest's folder (absolute paths are taken as they are). `split` is train, val, test or
train-N, on every row or on none (no column, or all empty: tempo makes the split); `group`
(one video, session or person) may be empty on a row (that image is a group of its own).
Every error names the row as `line N` (the header is line 1) and exits 2, before anything is
read or written. `write_manifest` writes the same format atomically (`tempo data split`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tempo_cli import atomic
from tempo_cli.errors import UsageError

COLUMNS = ("path", "label", "split", "group")
_SPLIT_RE = re.compile(r"^(train|val|test|train-\d+)$")


@dataclass(frozen=True)
class ManifestRow:
    """One row: `line` (1 = header), `path` as written, the file it names, label, split, group."""

    line: int
    path: str
    file: Path
    label: str
    split: str | None
    group: str | None


def _bad(option: str, manifest: Path, line: int, what: str) -> UsageError:
    return UsageError(option, str(manifest), f"line {line}: {what}")


def _header(option: str, manifest: Path, header: list[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in COLUMNS]
    missing = [c for c in ("path", "label") if c not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise _bad(
            option,
            manifest,
            1,
            f"header {','.join(header)!r}: expected path,label[,split][,group] (each column once)",
        )
    return {name: k for k, name in enumerate(names)}


def read_manifest(manifest: str | Path, option: str = "--data") -> list[ManifestRow]:
    """The rows of a manifest, checked (module doc); UsageError naming `option` and the line."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(option, str(manifest), f"not a readable CSV file: {e}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise _bad(option, manifest, 1, "no header; expected path,label[,split][,group]") from None
    cols = _header(option, manifest, header)
    base = manifest.parent
    rows: list[ManifestRow] = []
    seen: dict[Path, int] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(cols):
                raise _bad(
                    option, manifest, line, f"{len(fields)} fields, the header has {len(cols)}"
                )
            rows.append(_row(option, manifest, base, line, fields, cols, seen))
    except csv.Error as e:
        raise _bad(option, manifest, reader.line_num, f"malformed: {e}") from None
    if not rows:
        raise UsageError(option, str(manifest), "the manifest lists no image")
    _check_split_column(option, manifest, rows)
    return rows


def _row(
    option: str,
    manifest: Path,
    base: Path,
    line: int,
    fields: list[str],
    cols: dict[str, int],
    seen: dict[Path, int],
) -> ManifestRow:
    def get(name: str) -> str | None:
        value = fields[cols[name]].strip() if name in cols else ""
        return value or None

    path, label, split, group = get("path"), get("label"), get("split"), get("group")
    if path is None or label is None:
        raise _bad(option, manifest, line, "empty path or label")
    if split is not None and not _SPLIT_RE.match(split):
        raise _bad(option, manifest, line, f"unknown split {split!r} (train, val, test, train-N)")
    file = (base / path).resolve() if not Path(path).is_absolute() else Path(path)
    if not file.is_file():
        raise _bad(option, manifest, line, f"file not found: {path}")
    if file in seen:
        raise _bad(option, manifest, line, f"{path} is listed twice (first on line {seen[file]})")
    seen[file] = line
    return ManifestRow(line, path, file, label, split, group)


def _check_split_column(option: str, manifest: Path, rows: list[ManifestRow]) -> None:
    given = [r for r in rows if r.split is not None]
    if given and len(given) != len(rows):
        first = next(r for r in rows if r.split is None)
        raise _bad(
            option,
            manifest,
            first.line,
            "no split; fill the split column on every row, or on none (tempo then splits)",
        )


def manifest_text(rows: Sequence[tuple[str, str, str, str | None]]) -> str:
    """CSV text of (path, label, split, group) rows; the group column only if any has one."""
    grouped = any(r[3] is not None for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS if grouped else COLUMNS[:3])
    for path, label, split, group in rows:
        writer.writerow([path, label, split, group or ""] if grouped else [path, label, split])
    return out.getvalue()


def write_manifest(path: str | Path, rows: Sequence[tuple[str, str, str, str | None]]) -> Path:
    """Write (path, label, split, group) rows as a manifest, atomically; returns the path."""
    atomic.write_text(path, manifest_text(rows))
    return Path(path)
