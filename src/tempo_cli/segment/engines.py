"""Segment engines: small registered objects; `tempo segment` picks one by `--engine` name.

An engine trains Mask R-CNN from one backbone and returns the run's record ({checkpoint,
evals, iterations_to_90pct_final_segm_AP, final, ...}, also merged into metrics.json).
Adding one = one module defining an object with the `SegmentEngine` methods + one line in
`ENGINES` (and its name in `SegmentSettings.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tempo_cli.segment.detectron2_engine import ENGINE as DETECTRON2
from tempo_cli.segment.train import ENGINE as TORCHVISION

if TYPE_CHECKING:
    import torch

    from tempo_cli.data.coco import CocoSplit
    from tempo_cli.report.run_dir import RunDir
    from tempo_cli.settings.segment import SegmentSettings


@dataclass
class SegmentJob:
    """One backbone's run: what every engine trains from and writes to."""

    settings: SegmentSettings
    path: str  # the backbone (`--path`): a checkpoint, random or imagenet
    root: Path  # the dataset folder (ASL_mask layout)
    train_split: CocoSplit
    test_split: CocoSplit
    run_dir: RunDir
    device: torch.device


class SegmentEngine(Protocol):
    """What `segment.core` needs of an engine."""

    name: str

    def available(self) -> bool:
        """True when its dependencies import."""
        ...

    def require(self) -> None:
        """One-line TempoError (what to install) unless available."""
        ...

    def restore(self, resume: Path) -> tuple[dict[str, Any], Any]:
        """(the run's saved settings, the engine's resume state for `train`) of `--resume`."""
        ...

    def train(self, job: SegmentJob, resumed: Any) -> dict[str, Any]:
        """Train and evaluate from backbone `job.path` (or continue `resumed`); the record."""
        ...


ENGINES: dict[str, SegmentEngine] = {e.name: e for e in (TORCHVISION, DETECTRON2)}
