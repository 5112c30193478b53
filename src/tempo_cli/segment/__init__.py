"""Mask R-CNN transfer from Tempo backbones (`tempo segment`); entry point `run(settings)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempo_cli.settings.segment import SegmentSettings


def run(settings: SegmentSettings) -> dict[str, Any]:
    """Run `tempo segment` (see `tempo_cli.segment.core.run`)."""
    from tempo_cli.segment.core import run as _run

    return _run(settings)


__all__ = ["run"]
