"""Settings of `tempo download [asl|models|masks|demo|all]`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from tempo_cli.settings.base import CommandSettings

URL_SCHEMES = ("http", "https", "file")

Target = Literal["asl", "models", "masks", "demo", "all"]


class DownloadSettings(CommandSettings):
    """What to fetch, from where, and where to put it.

    `url` and `sha256` describe one source, so they need a single target that takes them
    (`asl` or `models`; `url` also `masks`), and `split` needs `masks` (checked by
    `tempo_cli.data.download.run`, which names the option). `dest` None means the data
    dir (asl, masks, demo) or the model dir (models).
    """

    command: ClassVar[str] = "download"

    target: Target = Field(
        "all",
        description="asl: the ASL datasets (ASL-big, ASL_mask) into the data dir; models: the "
        "model zoo into the model dir; masks: the reference's hand masks (gtFine colour PNGs) "
        "into the data dir's hand-masks/, where explain relevance finds them; demo: generate "
        "the offline demo dataset; all: demo, asl, models and masks.",
    )
    dest: Path | None = Field(
        None,
        description="Put it here instead of the data dir (asl, masks, demo) or the model dir "
        "(models).",
    )
    url: str | None = Field(
        None,
        description="Fetch the archive from this http(s):// or file:// URL instead of Google "
        "Drive (a mirror, or an archive copied by hand); for masks, the base URL the files' "
        "repository paths are appended to (a mirror or a file:// clone). One target only.",
    )
    sha256: str | None = Field(None, description="Expected SHA-256 of the archive (64 hex digits).")
    force: bool = Field(False, description="Download (or generate) again even if already present.")
    seed: int = Field(0, description="Seed of the generated demo dataset.")
    split: Literal["all", "test", "train"] = Field(
        "all", description="masks only: the hand masks of the test split, the train split or all."
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme.lower() not in URL_SCHEMES:
            raise ValueError(
                "an http://, https:// or file:// URL (a local archive: file:///abs/path.tar.xz)"
            )
        if parts.scheme.lower() == "file" and not parts.path:
            raise ValueError("a file:// URL needs a path, e.g. file:///abs/path/data.tar.xz")
        if parts.scheme.lower() != "file" and not parts.netloc:
            raise ValueError("an http(s) URL needs a host, e.g. https://mirror.example/data.tar.xz")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256_hex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("64 hexadecimal digits, as printed by sha256sum")
        return v
