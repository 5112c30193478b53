"""Safe extraction of tar archives (plain, gzip, bzip2, xz) from untrusted sources.

Every member is checked before it is written: absolute paths, `..` components,
paths that lead outside through an already extracted symlink, symlinks and hard
links whose target lies outside, device files, FIFOs and other special files are
refused. Python's own `filter="data"` runs as a second line of defence where the
interpreter has it (3.10.12+, 3.11.4+, 3.12+).

The archive is read once, as a stream (a multi-gigabyte `.tar.xz` is not
decompressed twice). Members are therefore written as they come: extract into a
fresh temporary folder and delete it on failure (`tempo_cli.data.download` does),
so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import lzma
import os
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from tempo_cli.errors import TempoError

_HAS_FILTERS = hasattr(tarfile, "data_filter")


class UnsafeArchiveError(TempoError):
    """A member would land outside the destination, or is a special file."""


class DamagedArchiveError(TempoError):
    """The archive cannot be read to its end (truncated, corrupt, not a tar file)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _show(name: str) -> str:
    return repr(name if len(name) <= 120 else name[:117] + "...")


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or os.path.isabs(name) or bool(PureWindowsPath(name).drive)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_member(member: tarfile.TarInfo, root: str) -> None:
    """Raise UnsafeArchiveError if extracting `member` under `root` is not safe.

    `root` is the real (symlink-free) path of the destination folder. The checks that
    use the file system (symlinks extracted earlier) must run just before the member is
    written, which `safe_extract` does.
    """
    name = member.name
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"member with an empty or invalid name {_show(name)}")
    if _is_absolute(name):
        raise UnsafeArchiveError(f"member {_show(name)} has an absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(f"member {_show(name)} has a '..' component")
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(f"member {_show(name)} is a device file")
    if member.isfifo():
        raise UnsafeArchiveError(f"member {_show(name)} is a FIFO")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"member {_show(name)} is a special file (type {member.type!r})")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        raise UnsafeArchiveError(f"member {_show(name)} leads outside the destination")
    if member.issym() or member.islnk():
        link = member.linkname
        kind = "symlink" if member.issym() else "hard link"
        if not link or _is_absolute(link):
            raise UnsafeArchiveError(f"{kind} {_show(name)} points to absolute {_show(link)}")
        # A symlink's target is relative to its own folder; a hard link's to the archive root.
        base = os.path.dirname(target) if member.issym() else root
        resolved = os.path.realpath(os.path.join(base, link))
        if not _inside(resolved, root):
            raise UnsafeArchiveError(f"{kind} {_show(name)} -> {_show(link)} points outside")


class _CountingReader:
    """A read-only file wrapper reporting the compressed bytes consumed so far."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None]) -> None:
        self.raw = raw
        self.progress = progress
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        block = self.raw.read(size)
        self.done += len(block)
        self.progress(self.done)
        return block


def safe_extract(
    archive: str | Path,
    into: str | Path,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Extract the tar `archive` (any compression) into the existing folder `into`.

    `progress(bytes_read)` is called as the (compressed) archive is consumed.

    Returns the number of members extracted. Raises UnsafeArchiveError for a hostile
    member and DamagedArchiveError for an unreadable, truncated or empty archive; in
    both cases members already written stay in `into` (the caller's temporary folder,
    which it deletes).
    """
    root = os.path.realpath(into)
    count = 0
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(
                fileobj=_CountingReader(raw, progress or (lambda n: None)), mode="r|*"
            ) as tar,
        ):
            tar.errorlevel = 1  # OSErrors and filter errors raise
            for member in tar:
                check_member(member, root)
                if _HAS_FILTERS:
                    tar.extract(member, root, set_attrs=True, filter="data")
                else:  # pragma: no cover - interpreters without extraction filters
                    tar.extract(member, root, set_attrs=True)
                count += 1
    except UnsafeArchiveError:
        raise
    except tarfile.FilterError as e:  # the second line of defence caught something
        raise UnsafeArchiveError(_one_line(e)) from e
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DamagedArchiveError(_one_line(e) or type(e).__name__) from e
    except OSError as e:
        if e.errno is None:  # gzip/bz2 decoding errors (BadGzipFile, "Invalid data stream")
            raise DamagedArchiveError(_one_line(e)) from e
        where = f" {e.filename}" if e.filename else f" into {into}"
        raise TempoError(f"cannot write{where}: {e.strerror or e}") from e
    if count == 0:
        raise DamagedArchiveError("the archive holds no files")
    return count
