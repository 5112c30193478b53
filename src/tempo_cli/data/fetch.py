"""Getting one archive's bytes onto disk: the transport under `tempo download`.

Knows nothing of targets or datasets (that is `tempo_cli.data.download`); it holds

- `Source`: where one archive comes from (an http(s) or `file://` URL, or a Google Drive id);
- `ByteBar`: the rich progress bar in bytes, and `hash_file`, the sha256 of a file read in
  place (a `file://` archive, or a Drive download completed by an earlier run);
- `fetch_http`: plain urllib, resumed with `Range: bytes=N-` from the `.part` file an
  interrupted attempt left (restarted when the server answers 200), giving up after
  `MAX_STALLS` attempts in a row that bring no new byte or `MAX_ATTEMPTS` in all;
- `fetch_drive`: Google Drive through gdown (it handles the confirm token of large files);
- the one-line errors they raise, each naming `--url` as the way out.

Both fetchers return `(sha256 hex, size in bytes)` of what they wrote.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tempo_cli import __version__
from tempo_cli.errors import TempoError
from tempo_cli.report.progress import console

CHUNK = 1 << 20
TIMEOUT_S = 30.0
MAX_STALLS = 3  # consecutive attempts that bring no new byte before giving up
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class Source:
    """Where one archive comes from."""

    target: str
    url: str  # shown in messages; for Google Drive the uc?id= URL
    archive_name: str
    drive_id: str | None = None

    @property
    def is_file(self) -> bool:
        return urlsplit(self.url).scheme.lower() == "file"


# ----------------------------------------------------------------------------- progress


class ByteBar:
    """A rich bar with bytes, speed and ETA; nothing when quiet or not on a terminal."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.show = not quiet and sys.stderr.isatty()
        self.label = label
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ByteBar:
        if self.show:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def update(self, completed: int, total: int | None = None) -> None:
        if self._progress is not None:
            if total is not None:
                self._progress.update(self._task, total=total)
            self._progress.update(self._task, completed=completed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def hash_file(path: Path, label: str, quiet: bool) -> tuple[str, int]:
    """(sha256 hex, size) of the file at `path`, with a bar labelled `label`."""
    h = hashlib.sha256()
    done = 0
    with ByteBar(label, quiet) as bar, open(path, "rb") as f:
        bar.update(0, path.stat().st_size)
        while block := f.read(CHUNK):
            h.update(block)
            done += len(block)
            bar.update(done)
    return h.hexdigest(), done


# ----------------------------------------------------------------------------- errors


def _unreachable(src: Source, reason: object) -> TempoError:
    return TempoError(
        f"cannot reach {src.url} ({one_line(reason)}); check the network, or give a mirror "
        f"with --url, or copy the archive here and use --url file:///path/to/{src.archive_name}"
    )


def _http_error(src: Source, code: int | str, reason: object) -> TempoError:
    return TempoError(
        f"{src.url}: HTTP {code} {one_line(reason)}; check the address, or give another "
        f"source with --url (a mirror, or file:///path/to/{src.archive_name})"
    )


def _network_failure(error: BaseException) -> str | None:
    """A short reason when `error` (or what caused it) is a connection failure, else None."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            text = str(seen)
            if "resolve" in text or "NameResolution" in text:
                return "cannot resolve the host name"
            if isinstance(seen, requests.exceptions.ProxyError):
                return "the proxy refused the connection"
            if isinstance(seen, requests.exceptions.Timeout):
                return "timed out"
            return "connection failed"
        seen = seen.__cause__ or seen.__context__
    return None


# ----------------------------------------------------------------------------- http(s)


class _Partial:
    """What the `.part` file holds so far: its running sha256 and its size in bytes."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.hash = hashlib.sha256()
        self.done = 0
        if part.is_file():
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    self.add(block)

    def add(self, block: bytes) -> None:
        self.hash.update(block)
        self.done += len(block)

    def restart(self, remove: bool) -> None:
        """Count from zero again; `remove` also deletes the file (else it is overwritten)."""
        if remove:
            self.part.unlink()
        self.hash, self.done = hashlib.sha256(), 0


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` or `bytes */TOTAL` -> (START, TOTAL); None where absent."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None
    spec = value.strip()[5:].strip()
    span, _, total = spec.partition("/")
    start = span.split("-", 1)[0].strip()
    return (
        int(start) if start.isdigit() else None,
        int(total) if total.strip().isdigit() else None,
    )


def _open(src: Source, start: int) -> HTTPResponse:
    """GET `src.url`, from byte `start` on when it is not 0 (uncompressed, so sizes hold)."""
    headers = {"User-Agent": f"tempo/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urlopen(Request(src.url, headers=headers), timeout=TIMEOUT_S)


def _body_start(resp: HTTPResponse, got: _Partial) -> tuple[bool, int | None]:
    """Line `got` up with what `resp` sends: (whether to read it, the total size if known).

    A 206 from where `got` stops appends; a 206 from elsewhere is not what was asked for:
    the file is removed and the next attempt starts again. A 200 is the whole file.
    """
    if got.done and resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != got.done:
            resp.close()
            got.restart(remove=True)
            return False, total
        return True, total
    if got.done:
        got.restart(remove=False)
    length = resp.headers.get("Content-Length")
    return True, int(length) if length and length.isdigit() else None


def _copy_body(resp: HTTPResponse, f: BinaryIO, got: _Partial, bar: ByteBar) -> object:
    """Append what `resp` sends to `f` until it ends; the error that cut it short, if any."""
    while True:
        try:
            block = resp.read(CHUNK)
        except (http.client.HTTPException, OSError) as e:
            return e
        if not block:
            return None
        f.write(block)
        got.add(block)
        bar.update(got.done)


def fetch_http(src: Source, part: Path, quiet: bool) -> tuple[str, int]:
    """Download `src.url` into `part`, resuming what `part` already holds.

    Returns (sha256 hex, size). On a dropped connection it retries from where it
    stopped (a `Range` request; a server answering 200 restarts from zero). When it
    gives up, or on Ctrl-C, `part` is kept so that the next run resumes.
    """
    got = _Partial(part)
    total: int | None = None
    stalls = attempts = 0
    last_error: object = None
    with ByteBar(src.archive_name, quiet) as bar:
        while True:
            attempts += 1
            start_of_attempt = got.done
            try:
                resp = _open(src, got.done)
            except HTTPError as e:
                if e.code == 416 and got.done:  # nothing left to send: complete, or stale
                    _, whole = _content_range(e.headers.get("Content-Range"))
                    e.close()
                    if whole == got.done:
                        return got.hash.hexdigest(), got.done
                    got.restart(remove=True)
                    continue
                raise _http_error(src, e.code, e.reason) from None
            except (URLError, OSError, http.client.HTTPException) as e:
                reason = e.reason if isinstance(e, URLError) else e
                if not got.done or stalls >= MAX_STALLS:
                    raise _unreachable(src, reason) from None
                stalls += 1
                last_error = reason
                time.sleep(0.2 * stalls)
                continue
            with resp:
                read, total = _body_start(resp, got)
                if not read:
                    continue
                bar.update(got.done, total)
                with open(part, "ab" if got.done else "wb") as f:
                    cut = _copy_body(resp, f, got, bar)
                if cut is not None:
                    last_error = cut
            if total is None or got.done >= total:
                return _finished(src, got, total)
            # The connection dropped before the end: resume.
            stalls = 0 if got.done > start_of_attempt else stalls + 1
            if stalls >= MAX_STALLS or attempts >= MAX_ATTEMPTS:
                raise TempoError(
                    f"download of {src.url} stopped at {got.done} of {total} bytes "
                    f"({one_line(last_error or 'connection closed')}); the partial file "
                    f"{part} is kept: run the same command again to resume"
                )
            time.sleep(0.1 * stalls)


def _finished(src: Source, got: _Partial, total: int | None) -> tuple[str, int]:
    """(sha256 hex, size) of a transfer that ended; one longer than announced is removed."""
    if total is not None and got.done > total:
        got.part.unlink()
        raise TempoError(
            f"{src.url} sent more bytes than announced ({got.done} > {total}); "
            "the file was removed: try again, or use another --url"
        )
    return got.hash.hexdigest(), got.done


# ----------------------------------------------------------------------------- Google Drive


def fetch_drive(src: Source, out: Path, quiet: bool) -> tuple[str, int]:
    """Download a Google Drive file to `out` with gdown (resumable); (sha256 hex, size)."""
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    if out.is_file():  # completed earlier; only its extraction was interrupted
        return hash_file(out, src.archive_name, quiet)
    h = hashlib.sha256()
    with ByteBar(src.archive_name, quiet) as bar:
        try:
            gdown.download(
                id=src.drive_id,
                output=str(out),
                quiet=True,
                resume=True,
                progress=lambda done, total: bar.update(done, total),
                hasher=h,
                timeout=(TIMEOUT_S, 120.0),
                retries=3,
            )
        except FileURLRetrievalError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TempoError(
                f"Google Drive refused {src.url} ({one_line(first)}); try again later, or "
                f"download it in a browser and use --url file:///path/to/{src.archive_name}"
            ) from None
        except requests.exceptions.HTTPError as e:
            code = e.response.status_code if e.response is not None else "?"
            reason = e.response.reason if e.response is not None else str(e)
            raise _http_error(src, code, reason) from None
        except (DownloadError, requests.exceptions.RequestException) as e:
            offline = _network_failure(e)
            if offline is not None:
                raise _unreachable(src, offline) from None
            raise TempoError(
                f"download of {src.url} failed ({one_line(e)}); run the same command again "
                "to resume, or use --url"
            ) from None
    return h.hexdigest(), out.stat().st_size
