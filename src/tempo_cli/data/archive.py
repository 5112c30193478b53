"""Installing one archive (`tempo download asl|models`): fetch, verify, unpack, record.

Knows the steps, not the targets (`tempo_cli.data.download.ArchiveTarget` says where an
archive lives, what it unpacks and where it goes). One archive goes through:

1. already present (the expected folders/files exist, or the manifest says so) and no
   `--force` -> say so, touch no network;
2. fetch (`tempo_cli.data.fetch`): Google Drive through gdown, or `--url`: http(s),
   resumed from the `.part` file left by an interrupted attempt, or a local `file://`
   archive read in place;
3. verify `--sha256` (a mismatch removes the downloaded file);
4. extract safely (`tempo_cli.data.safe_tar`) into a temporary folder inside the
   destination, then rename each top-level entry into place; the temporary folder is
   removed on any failure, so a failed run never leaves a half dataset;
5. record the archive's sha256 in `tempo-download.json` beside the data; delete the
   downloaded archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tempo_cli import __version__, atomic
from tempo_cli.data.fetch import ByteBar, Source, fetch_drive, fetch_http, hash_file
from tempo_cli.data.safe_tar import DamagedArchiveError, UnsafeArchiveError, safe_extract
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.report.progress import log

if TYPE_CHECKING:
    from tempo_cli.data.download import ArchiveTarget

MANIFEST = "tempo-download.json"
TAR_SUFFIXES = (".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz")


def stamp() -> dict[str, str]:
    """When and by which tempo an entry of the manifest was written."""
    return {
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tempo": __version__,
    }


# ----------------------------------------------------------------------------- manifest


def read_manifest(dest: Path) -> dict[str, Any]:
    """`dest/tempo-download.json` (empty when missing or unreadable)."""
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_entry(dest: Path, target: str, entry: dict[str, Any]) -> None:
    data = read_manifest(dest)
    data[target] = entry
    atomic.write_json(dest / MANIFEST, data)


def present(target: ArchiveTarget, dest: Path) -> list[str] | None:
    """The entries of `target` already in `dest`, or None when it must be downloaded."""
    if not dest.is_dir():
        return None
    entry = read_manifest(dest).get(target.name)
    if isinstance(entry, dict) and entry.get("entries"):
        names = [str(n) for n in entry["entries"]]
        if all((dest / n).exists() for n in names):
            return names
        return None
    names = list(target.entries)
    return names if all((dest / n).exists() for n in names) else None


# ----------------------------------------------------------------------------- installing


def _unwrap(target: ArchiveTarget, root: Path, label: str) -> Path:
    """The folder holding the data: `root`, or its single subfolder (`data/ASL-big`)."""
    if target.looks_complete(root):
        return root
    children = list(root.iterdir())
    if (
        len(children) == 1
        and children[0].is_dir()
        and not children[0].is_symlink()
        and target.looks_complete(children[0])
    ):
        return children[0]
    raise TempoError(
        f"{label} does not hold {target.what} (no {target.expected} inside); nothing was "
        "installed: check --url"
    )


def _move_into_place(root: Path, dest: Path) -> list[str]:
    """Rename every entry of `root` to `dest/<name>`, replacing what was there."""
    names = sorted(p.name for p in root.iterdir())
    for name in names:
        final = dest / name
        if final.exists() or final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=".tempo-old-", dir=dest))
            os.replace(final, old / name)
            os.replace(root / name, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(root / name, final)
    return names


def install(
    target: ArchiveTarget, archive: Path, dest: Path, label: str, quiet: bool = True
) -> list[str]:
    """Extract `archive` safely into a temporary folder in `dest`, then move it into place.

    Returns the top-level names installed. The temporary folder is always removed.
    """
    staging = Path(tempfile.mkdtemp(prefix=".tempo-extract-", dir=dest))
    try:
        try:
            with ByteBar(f"unpacking {label}", quiet) as bar:
                bar.update(0, archive.stat().st_size)
                safe_extract(archive, staging, progress=bar.update)
        except UnsafeArchiveError as e:
            raise UnsafeArchiveError(
                f"refusing to unpack {label}: {e}; nothing was installed"
            ) from None
        except DamagedArchiveError as e:
            raise DamagedArchiveError(
                f"{label} is damaged or truncated ({e}); nothing was installed and the "
                "download was removed: run the same command again, or check --url"
            ) from None
        root = _unwrap(target, staging, label)
        return _move_into_place(root, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- one archive


def part_path(src: Source, dest: Path) -> Path:
    tag = hashlib.sha256(src.url.encode()).hexdigest()[:8]
    return dest / f"{src.archive_name}.{tag}.part"


def _local_archive(src: Source) -> Path:
    """The file a `file://` source names, read in place (never deleted)."""
    archive = Path(url2pathname(unquote(urlsplit(src.url).path)))
    if not archive.is_file():
        raise TempoError(
            f"{src.url}: no such file; give the full path, e.g. "
            f"--url file:///home/me/{src.archive_name}"
        )
    return archive


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def download_archive(
    target: ArchiveTarget,
    dest: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Fetch, verify and install the archive of `target` into `dest`.

    Returns the record written to the manifest plus `status` ("downloaded" or "present").
    """
    src = target.source(url)
    have = present(target, dest)
    if have is not None and not force:
        log(
            f"{target.what} already in {dest} ({', '.join(have)}); nothing downloaded "
            f"(--force downloads again)",
            quiet,
        )
        return {"target": target.name, "dest": str(dest), "status": "present", "entries": have}

    started = time.perf_counter()
    digest, size, names = _fetch_and_install(target, src, dest, sha256, quiet)
    record = {
        "archive": src.archive_name,
        "source": src.url,
        "sha256": digest,
        "bytes": size,
        "entries": names,
        **stamp(),
    }
    record_entry(dest, target.name, record)
    seconds = time.perf_counter() - started
    log(
        f"{target.what} ready in {dest}: {', '.join(names)} "
        f"({_size(size)}, {seconds:.1f} s, sha256 {digest[:16]}...)",
        quiet,
    )
    return {"target": target.name, "dest": str(dest), "status": "downloaded", **record}


def _fetch_and_install(
    target: ArchiveTarget, src: Source, dest: Path, sha256: str | None, quiet: bool
) -> tuple[str, int, list[str]]:
    """Steps 2-4 for `src` into `dest`: (sha256 hex, size, top-level names installed).

    On failure a partial download is kept for the next run to resume, a complete one that
    failed verification or extraction is removed, and so is `dest` if this run created it
    and it is still empty. The user's own `file://` archive is never touched.
    """
    created_dest = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    downloaded: Path | None = None  # a file we fetch (never the user's file:// source)
    fetching = False  # True while a failure should keep the partial file for resuming
    try:
        if not quiet and sys.stderr.isatty():  # off a terminal: errors stay one line
            log(f"{target.what}: {src.url} -> {dest}")
        if src.is_file:
            archive = _local_archive(src)
            digest, size = hash_file(archive, src.archive_name, quiet)
        else:
            fetching = True
            if src.drive_id is not None:
                archive = downloaded = dest / src.archive_name
                digest, size = fetch_drive(src, archive, quiet)
            else:
                archive = downloaded = part_path(src, dest)
                digest, size = fetch_http(src, archive, quiet)
            fetching = False  # complete from here on: a bad file is removed

        if sha256 is not None and digest != sha256:
            gone = "the downloaded file was removed" if downloaded else "the file was kept"
            raise TempoError(
                f"checksum mismatch for {src.url}: expected sha256 {sha256}, got {digest}; "
                f"{gone}: check --sha256, or download again"
            )
        names = install(target, archive, dest, src.archive_name, quiet)
    except KeyboardInterrupt:
        # Partial or complete, the file stays: the next run resumes (or finds it whole).
        kept = downloaded is not None and downloaded.exists()
        where = f"; {downloaded} is kept: run the same command again to resume" if kept else ""
        _drop_if_empty(dest, created_dest)
        raise Interrupted(f"download of {src.url} interrupted{where}") from None
    except BaseException:
        if downloaded is not None and not fetching:
            downloaded.unlink(missing_ok=True)
        _drop_if_empty(dest, created_dest)
        raise
    if downloaded is not None:
        downloaded.unlink(missing_ok=True)
    return digest, size, names


def _drop_if_empty(dest: Path, created: bool) -> None:
    """Remove `dest` after a failure if this run created it and nothing is in it."""
    if created:
        with contextlib.suppress(OSError):
            dest.rmdir()
