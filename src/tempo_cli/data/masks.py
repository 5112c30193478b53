"""The reference's hand masks: `tempo download masks`, and where relevance finds them.

The reference publishes its Cityscapes-style hand masks in its source repository, not in
the Drive archives: `xai/relative_relevance/gtFine/{Test,Train}/<ID>_gtFine_color.png`,
240 small PNGs. `reference_masks.json` (package data, a copy of the project's
`reference-masks.json`) names the repository, its commit, the raw-file URL pattern and
each file's path, sha256 and size.

- Where: `<dest>/hand-masks/gtFine/<Split>/<ID>_gtFine_color.png` (the part of the path
  from `gtFine/` on), dest = the data dir by default, so `masks_dir()` is where
  `tempo explain relevance` looks when it is given no `--masks`.
- Source: the manifest's raw URL of each file; `--url BASE` fetches `BASE/<path>` instead
  (an http(s) mirror of the repository, or `file://` a local clone of it), or, when BASE
  holds `{path}`, that pattern.
- Checked: every file's size and sha256 against the manifest; a file that differs is
  refused.
- All or nothing: files are fetched into a temporary folder inside dest and only renamed
  into place once every one of them has been checked. On any failure (a refused file,
  an HTTP error, Ctrl-C) the temporary folder is removed, and dest too if this run made
  it, so nothing is left behind.
- Files already in place that match the manifest are not fetched again (`--force` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from tempo_cli import __version__, places
from tempo_cli.data.fetch import ByteBar, one_line
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.report.progress import log

FOLDER = "hand-masks"
MANIFEST_RESOURCE = "reference_masks.json"
SPLITS = ("all", "test", "train")
WORKERS = 8  # 240 files of ~2 kB: latency-bound, so a few requests in flight
TIMEOUT_S = 30.0
TRIES = 3  # per file, for connection failures and 5xx answers


@dataclass(frozen=True)
class MaskFile:
    """One file of the manifest: its path in the repository, sha256 (hex) and size."""

    path: str
    sha256: str
    bytes: int

    @property
    def local(self) -> PurePosixPath:
        """Its place under the masks folder: the path from `gtFine/` on."""
        parts = PurePosixPath(self.path).parts
        start = parts.index("gtFine") if "gtFine" in parts else len(parts) - 1
        return PurePosixPath(*parts[start:])

    @property
    def split(self) -> str:
        """The split folder it lies in (`Test`, `Train`)."""
        return PurePosixPath(self.path).parent.name


@dataclass(frozen=True)
class MaskManifest:
    """`reference_masks.json`: where the files come from and what they must be."""

    source: str
    commit: str
    raw_url: str  # holds `{path}`
    files: tuple[MaskFile, ...]

    def select(self, split: str) -> list[MaskFile]:
        """The files of `split` (one of SPLITS, compared without case)."""
        return [f for f in self.files if split == "all" or f.split.lower() == split.lower()]

    def url(self, f: MaskFile, base: str | None = None) -> str:
        """Where `f` is fetched from: the raw URL, `base/<path>`, or `base` with `{path}`."""
        pattern = self.raw_url if base is None else base
        if "{path}" not in pattern:
            pattern = pattern.rstrip("/") + "/{path}"
        return pattern.replace("{path}", quote(f.path))


def load_manifest() -> MaskManifest:
    """The packaged manifest; its paths are checked to stay inside the masks folder."""
    text = resources.files("tempo_cli.data").joinpath(MANIFEST_RESOURCE).read_text("utf-8")
    raw = json.loads(text)
    files = tuple(MaskFile(f["path"], f["sha256"].lower(), int(f["bytes"])) for f in raw["files"])
    for f in files:
        if PurePosixPath(f.path).is_absolute() or ".." in PurePosixPath(f.path).parts:
            raise TempoError(f"{MANIFEST_RESOURCE}: unsafe path {f.path!r}; reinstall tempo")
    return MaskManifest(raw["source"], raw["commit"], raw["raw_url"], files)


def masks_dir() -> Path:
    """Where `tempo download masks` puts the masks by default (the data dir's hand-masks/)."""
    return places.data_dir() / FOLDER


def _matches(path: Path, f: MaskFile) -> bool:
    """Is the file at `path` the manifest's `f` (size, then sha256)?"""
    try:
        if path.stat().st_size != f.bytes:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    except OSError:
        return False


# ----------------------------------------------------------------------------- one file


def _refused(url: str, f: MaskFile, data: bytes) -> TempoError:
    got = hashlib.sha256(data).hexdigest()
    size = f"{len(data)}" if len(data) <= f.bytes else f"more than {f.bytes}"
    return TempoError(
        f"{url} is not the reference's {f.local.name}: {size} bytes with sha256 {got}, the "
        f"manifest says {f.bytes} bytes with sha256 {f.sha256}; refused, nothing was "
        "installed: check --url"
    )


def fetch_one(url: str, f: MaskFile) -> bytes:
    """The bytes of `f` from `url`, checked against the manifest (TempoError otherwise).

    Reads at most one byte more than the manifest's size, so a hostile or wrong URL
    cannot fill the disk or the memory.
    """
    headers = {"User-Agent": f"tempo/{__version__}", "Accept-Encoding": "identity"}
    for attempt in range(1, TRIES + 1):
        try:
            with urlopen(Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
                data = resp.read(f.bytes + 1)
            break
        except HTTPError as e:
            e.close()
            if e.code < 500 or attempt == TRIES:
                raise TempoError(
                    f"{url}: HTTP {e.code} {one_line(e.reason)}; nothing was installed: check "
                    "--url (files are fetched as <url>/<path in the reference repository>)"
                ) from None
        except (URLError, OSError, http.client.HTTPException) as e:
            if attempt == TRIES:
                reason = e.reason if isinstance(e, URLError) else e
                raise TempoError(
                    f"cannot reach {url} ({one_line(reason)}); nothing was installed: check "
                    "the network, or give a mirror with --url (http(s) or file:// of a clone "
                    "of the reference repository)"
                ) from None
        time.sleep(0.2 * attempt)
    if len(data) != f.bytes or hashlib.sha256(data).hexdigest() != f.sha256:
        raise _refused(url, f, data)
    return data


# ----------------------------------------------------------------------------- all files


def _fetch_into(
    manifest: MaskManifest, todo: list[MaskFile], base: str | None, staging: Path, quiet: bool
) -> int:
    """Fetch and check every file of `todo` into `staging/<local>`; returns the bytes."""
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="tempo-masks")
    futures: dict[Future[bytes], MaskFile] = {}
    failed = True
    try:
        with ByteBar("hand masks", quiet) as bar:
            bar.update(0, sum(f.bytes for f in todo))
            futures = {pool.submit(fetch_one, manifest.url(f, base), f): f for f in todo}
            done = 0
            for future in as_completed(futures):
                f = futures[future]
                data = future.result()  # raises the file's TempoError
                target = staging / f.local
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                done += len(data)
                bar.update(done)
        failed = False
        return done
    finally:
        # On failure do not wait for the requests still in flight: they only return bytes.
        pool.shutdown(wait=not failed, cancel_futures=True)


def _move_into_place(staging: Path, root: Path, todo: list[MaskFile]) -> None:
    """Rename each checked file from `staging` onto its place under `root` (atomic each)."""
    for f in todo:
        final = root / f.local
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / f.local, final)


def download_masks(
    dest: Path,
    *,
    url: str | None = None,
    split: str = "all",
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Install the manifest's masks of `split` under `dest/hand-masks`; returns the record.

    `status` is "present" (every file already there and matching; no network) or
    "downloaded". Raises TempoError (nothing installed) when a file cannot be fetched or
    does not match the manifest, Interrupted on Ctrl-C.
    """
    manifest = load_manifest()
    files = manifest.select(split)
    root = dest / FOLDER
    record: dict[str, Any] = {
        "target": "masks",
        "dest": str(dest),
        "folder": str(root),
        "split": split,
        "files": len(files),
        "source": url or manifest.raw_url,
        "commit": manifest.commit,
    }
    todo = files if force else [f for f in files if not _matches(root / f.local, f)]
    if not todo:
        log(
            f"the reference's hand masks ({len(files)} files, split {split}) are already in "
            f"{root}; nothing downloaded (--force downloads again)",
            quiet,
        )
        return {**record, "status": "present", "fetched": 0, "bytes": 0}
    started = time.perf_counter()
    size = _install(manifest, todo, url, dest, root, quiet)
    log(
        f"the reference's hand masks ready in {root}: {len(todo)} of {len(files)} files "
        f"fetched and checked ({size / 1000:.0f} kB, {time.perf_counter() - started:.1f} s)",
        quiet,
    )
    return {**record, "status": "downloaded", "fetched": len(todo), "bytes": size}


def _install(
    manifest: MaskManifest,
    todo: list[MaskFile],
    url: str | None,
    dest: Path,
    root: Path,
    quiet: bool,
) -> int:
    """Fetch `todo` into a temporary folder in `dest`, then move it under `root`."""
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tempo-masks-", dir=dest))
    try:
        size = _fetch_into(manifest, todo, url, staging, quiet)
        _move_into_place(staging, root, todo)
        return size
    except KeyboardInterrupt:
        raise Interrupted(
            "download of the hand masks interrupted; nothing was installed: run the same "
            "command again"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # a failed run leaves no empty folder behind
            with contextlib.suppress(OSError):
                dest.rmdir()
