"""`tempo download`: the ASL datasets, the model zoo, the hand masks and the demo.

Core entry point: `run(settings)`. Each target is a `DownloadTarget` in `TARGETS` (the
names `DownloadSettings.target` accepts, besides `all`, which installs them in order):

- `ArchiveTarget`s `asl` and `models`: a Google Drive archive (or `--url`), verified,
  resumable and safely unpacked by `tempo_cli.data.archive`;
- `masks`: the reference's hand masks, file by file against the packaged manifest
  (`tempo_cli.data.masks`);
- `demo`: generated offline (`tempo_cli.data.demo`).
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tempo_cli import places
from tempo_cli.data.archive import TAR_SUFFIXES, download_archive, record_entry, stamp
from tempo_cli.data.fetch import Source
from tempo_cli.data.masks import FOLDER as MASKS_FOLDER
from tempo_cli.data.masks import download_masks
from tempo_cli.errors import UsageError
from tempo_cli.report.progress import log
from tempo_cli.settings.download import DownloadSettings

MODEL_SUFFIXES = (".pth", ".pt", ".pkl")


@dataclass(frozen=True)
class DownloadTarget(ABC):
    """One thing `tempo download` installs.

    `options`: the settings fields (beyond --dest, --force) that describe this target;
    given with another target they are refused, naming the option.
    """

    name: str
    what: str
    options: tuple[str, ...] = ()

    def default_dest(self) -> Path:
        return places.data_dir()

    @abstractmethod
    def fetch(self, dest: Path | None, settings: DownloadSettings) -> dict[str, Any]:
        """Install this target into `dest` (None: its default place); its metrics record."""


@dataclass(frozen=True)
class ArchiveTarget(DownloadTarget):
    """A Google Drive archive (SPEC.md) unpacked into the destination.

    `expected`: what the archive must hold (for messages); `entries`: what shows it is
    installed when no manifest says so.
    """

    options: tuple[str, ...] = ("url", "sha256")
    drive_id: str = ""
    archive_name: str = ""
    expected: str = ""
    entries: tuple[str, ...] = ()

    def source(self, url: str | None = None) -> Source:
        """The default Google Drive archive, or `url` instead."""
        if url is None:
            drive_url = f"https://drive.google.com/uc?id={self.drive_id}"
            return Source(self.name, drive_url, self.archive_name, self.drive_id)
        name = Path(unquote(urlsplit(url).path)).name
        if not name.lower().endswith(TAR_SUFFIXES):
            name = self.archive_name
        return Source(self.name, url, name)

    def looks_complete(self, root: Path) -> bool:
        """Does `root` hold what the archive unpacks? (its first entry, `ASL-big/`)"""
        return (root / self.entries[0]).is_dir()

    def fetch(self, dest: Path | None, settings: DownloadSettings) -> dict[str, Any]:
        return download_archive(
            self,
            dest or self.default_dest(),
            url=settings.url,
            sha256=settings.sha256,
            force=settings.force,
            quiet=settings.quiet,
        )


@dataclass(frozen=True)
class ModelsTarget(ArchiveTarget):
    """The model zoo: model files, into the model dir."""

    def default_dest(self) -> Path:
        return places.model_dir()

    def looks_complete(self, root: Path) -> bool:
        return any(p.is_file() and p.suffix.lower() in MODEL_SUFFIXES for p in root.iterdir())


@dataclass(frozen=True)
class MasksTarget(DownloadTarget):
    """The reference's hand masks, file by file against the packaged manifest."""

    options: tuple[str, ...] = ("url", "split")

    def fetch(self, dest: Path | None, settings: DownloadSettings) -> dict[str, Any]:
        dest = dest or self.default_dest()
        result = download_masks(
            dest, url=settings.url, split=settings.split, force=settings.force, quiet=settings.quiet
        )
        if result["status"] == "downloaded":
            keys = ("source", "commit", "split", "files", "fetched", "bytes")
            entry = {k: result[k] for k in keys}
            record_entry(dest, self.name, {**entry, "entries": [MASKS_FOLDER], **stamp()})
        return result


@dataclass(frozen=True)
class DemoTarget(DownloadTarget):
    """The offline demo dataset, generated (no network)."""

    options: tuple[str, ...] = ("seed",)

    def fetch(self, dest: Path | None, settings: DownloadSettings) -> dict[str, Any]:
        return make_demo(dest, settings.seed, settings.force, settings.quiet)


# In the order `all` installs them. SPEC.md: the public archives on Google Drive.
TARGETS: dict[str, DownloadTarget] = {
    t.name: t
    for t in (
        DemoTarget("demo", "the demo dataset"),
        ArchiveTarget(
            "asl",
            "the ASL datasets",
            drive_id="1n1aQriLVscRcJ6LAcVHMqv7jLtv2YWGP",
            archive_name="data.tar.xz",
            expected="ASL-big/",
            entries=("ASL-big", "ASL_mask"),
        ),
        ModelsTarget(
            "models",
            "the model zoo",
            drive_id="1IsnAlys_Bu3mgSd8Iji7TcwJqkq8uotB",
            archive_name="models.tar.xz",
            expected="model files (*.pth, *.pkl)",
            entries=("tempo.pth",),
        ),
        MasksTarget("masks", "the reference's hand masks"),
    )
}


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


def _check_options(settings: DownloadSettings, targets: list[DownloadTarget]) -> None:
    """An option given for targets that do not take it is bad usage (exit 2).

    `--url` and `--sha256` describe one source, so they also need a single target.
    """
    for option in ("url", "sha256", "split"):
        value = getattr(settings, option)
        if value == DownloadSettings.model_fields[option].default:
            continue
        one_source = option in ("url", "sha256")
        if any(option in t.options for t in targets) and (len(targets) == 1 or not one_source):
            continue
        takers = " or ".join(t.name for t in TARGETS.values() if option in t.options)
        alone = " alone" if one_source else ""
        raise UsageError(
            f"--{option}", value, f"goes with target {takers}{alone}, not {settings.target}"
        )


def run(settings: DownloadSettings) -> list[dict[str, Any]]:
    """`tempo download`: fetch the chosen target(s); returns one record per target."""
    from tempo_cli.report.run_dir import RunDir

    targets = list(TARGETS.values()) if settings.target == "all" else [TARGETS[settings.target]]
    _check_options(settings, targets)
    dest = settings.dest.expanduser().resolve() if settings.dest is not None else None
    run_dir = RunDir(settings)
    run_dir.save_config(settings)
    results: list[dict[str, Any]] = []
    for target in targets:
        results.append(target.fetch(dest, settings))
        run_dir.update_metrics(downloads=results)
    return results
