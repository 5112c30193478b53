"""`tempo download`: the ASL datasets, the model zoo and the demo, verified, resumable, safe.

Core entry point: `run(settings)`. This module knows the targets (where each archive
lives, what it unpacks, where it goes) and installs them; the bytes are fetched by
`tempo_cli.data.fetch`. One archive target (`asl`, `models`) goes through:

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

`demo` is generated offline (`tempo_cli.data.demo`).
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
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tempo_cli import __version__, atomic, places
from tempo_cli.data.fetch import ByteBar, Source, fetch_drive, fetch_http, hash_file
from tempo_cli.data.safe_tar import DamagedArchiveError, UnsafeArchiveError, safe_extract
from tempo_cli.errors import Interrupted, TempoError, UsageError
from tempo_cli.report.progress import log
from tempo_cli.settings.download import DownloadSettings

# SPEC.md: the public archives on Google Drive.
DRIVE_IDS = {
    "asl": "1n1aQriLVscRcJ6LAcVHMqv7jLtv2YWGP",
    "models": "1IsnAlys_Bu3mgSd8Iji7TcwJqkq8uotB",
}
ARCHIVE_NAMES = {"asl": "data.tar.xz", "models": "models.tar.xz"}
WHAT = {"asl": "the ASL datasets", "models": "the model zoo"}
MANIFEST = "tempo-download.json"
TAR_SUFFIXES = (".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz")
MODEL_SUFFIXES = (".pth", ".pt", ".pkl")


def source_for(target: str, url: str | None = None) -> Source:
    """The default Google Drive archive of `target`, or `url` instead."""
    if url is None:
        drive_id = DRIVE_IDS[target]
        return Source(
            target, f"https://drive.google.com/uc?id={drive_id}", ARCHIVE_NAMES[target], drive_id
        )
    name = Path(unquote(urlsplit(url).path)).name
    if not name.lower().endswith(TAR_SUFFIXES):
        name = ARCHIVE_NAMES[target]
    return Source(target, url, name)


def default_dest(target: str) -> Path:
    """places.data_dir() for asl and demo, places.model_dir() for models."""
    return places.model_dir() if target == "models" else places.data_dir()


# ----------------------------------------------------------------------------- manifest


def read_manifest(dest: Path) -> dict[str, Any]:
    """`dest/tempo-download.json` (empty when missing or unreadable)."""
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(dest: Path, target: str, entry: dict[str, Any]) -> None:
    data = read_manifest(dest)
    data[target] = entry
    atomic.write_json(dest / MANIFEST, data)


def _looks_complete(target: str, root: Path) -> bool:
    """Does `root` hold what the archive of `target` unpacks?"""
    if target == "asl":
        return (root / "ASL-big").is_dir()
    return any(p.is_file() and p.suffix.lower() in MODEL_SUFFIXES for p in root.iterdir())


def present(target: str, dest: Path) -> list[str] | None:
    """The entries of `target` already in `dest`, or None when it must be downloaded."""
    if not dest.is_dir():
        return None
    entry = read_manifest(dest).get(target)
    if isinstance(entry, dict) and entry.get("entries"):
        names = [str(n) for n in entry["entries"]]
        if all((dest / n).exists() for n in names):
            return names
        return None
    if target == "asl":
        names = ["ASL-big", "ASL_mask"]
        return names if all((dest / n).is_dir() for n in names) else None
    return ["tempo.pth"] if (dest / "tempo.pth").is_file() else None


# ----------------------------------------------------------------------------- installing


def _unwrap(target: str, root: Path, label: str) -> Path:
    """The folder holding the data: `root`, or its single subfolder (`data/ASL-big`)."""
    if _looks_complete(target, root):
        return root
    children = list(root.iterdir())
    if (
        len(children) == 1
        and children[0].is_dir()
        and not children[0].is_symlink()
        and _looks_complete(target, children[0])
    ):
        return children[0]
    expected = "ASL-big/" if target == "asl" else "model files (*.pth, *.pkl)"
    raise TempoError(
        f"{label} does not hold {WHAT[target]} (no {expected} inside); nothing was "
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


def install(target: str, archive: Path, dest: Path, label: str, quiet: bool = True) -> list[str]:
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


def _part_path(src: Source, dest: Path) -> Path:
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
    target: str,
    dest: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Fetch, verify and install the archive of `target` ("asl" or "models") into `dest`.

    Returns the record written to the manifest plus `status` ("downloaded" or "present").
    """
    src = source_for(target, url)
    have = present(target, dest)
    if have is not None and not force:
        log(
            f"{WHAT[target]} already in {dest} ({', '.join(have)}); nothing downloaded "
            f"(--force downloads again)",
            quiet,
        )
        return {"target": target, "dest": str(dest), "status": "present", "entries": have}

    started = time.perf_counter()
    digest, size, names = _fetch_and_install(target, src, dest, sha256, quiet)
    record = {
        "archive": src.archive_name,
        "source": src.url,
        "sha256": digest,
        "bytes": size,
        "entries": names,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tempo": __version__,
    }
    _record(dest, target, record)
    seconds = time.perf_counter() - started
    log(
        f"{WHAT[target]} ready in {dest}: {', '.join(names)} "
        f"({_size(size)}, {seconds:.1f} s, sha256 {digest[:16]}...)",
        quiet,
    )
    return {"target": target, "dest": str(dest), "status": "downloaded", **record}


def _fetch_and_install(
    target: str, src: Source, dest: Path, sha256: str | None, quiet: bool
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
            log(f"{WHAT[target]}: {src.url} -> {dest}")
        if src.is_file:
            archive = _local_archive(src)
            digest, size = hash_file(archive, src.archive_name, quiet)
        else:
            fetching = True
            if src.drive_id is not None:
                archive = downloaded = dest / src.archive_name
                digest, size = fetch_drive(src, archive, quiet)
            else:
                archive = downloaded = _part_path(src, dest)
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


# ----------------------------------------------------------------------------- demo


@contextlib.contextmanager
def _data_dir(dest: Path | None) -> Iterator[None]:
    """Point places.data_dir() at `dest` for the duration (demo with --dest)."""
    if dest is None:
        yield
        return
    old = os.environ.get("TEMPO_DATA_DIR")
    os.environ["TEMPO_DATA_DIR"] = str(dest)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TEMPO_DATA_DIR", None)
        else:
            os.environ["TEMPO_DATA_DIR"] = old


def make_demo(dest: Path | None, seed: int, force: bool, quiet: bool) -> dict[str, Any]:
    """Generate the offline demo dataset (no network) into `dest` or the data dir."""
    from tempo_cli.data.demo import ensure_demo

    with _data_dir(dest):
        root = Path(ensure_demo(seed=seed, force=force, quiet=quiet))
    log(f"demo dataset ready in {root} (and {root.parent / 'demo_mask'})", quiet)
    return {"target": "demo", "dest": str(root.parent), "status": "ready", "seed": seed}


# ----------------------------------------------------------------------------- command


def run(settings: DownloadSettings) -> list[dict[str, Any]]:
    """`tempo download`: fetch the chosen target(s); returns one record per target."""
    from tempo_cli.report.run_dir import RunDir

    if settings.target in ("demo", "all"):
        for option in ("url", "sha256"):
            value = getattr(settings, option)
            if value is not None:
                raise UsageError(
                    f"--{option}",
                    value,
                    f"describes one archive: use it with target asl or "
                    f"models, not {settings.target}",
                )
    targets = ["demo", "asl", "models"] if settings.target == "all" else [settings.target]
    dest = settings.dest.expanduser().resolve() if settings.dest is not None else None
    run_dir = RunDir(settings)
    run_dir.save_config(settings)
    results: list[dict[str, Any]] = []
    for target in targets:
        if target == "demo":
            results.append(make_demo(dest, settings.seed, settings.force, settings.quiet))
        else:
            results.append(
                download_archive(
                    target,
                    dest or default_dest(target),
                    url=settings.url,
                    sha256=settings.sha256,
                    force=settings.force,
                    quiet=settings.quiet,
                )
            )
        run_dir.update_metrics(downloads=results)
    return results
