"""Segment engines: small registered objects; `tempo segment` picks one by `--engine` name.

An engine (a `segment.loop.SegmentEngine`) trains Mask R-CNN from one backbone and returns
the run's record ({checkpoint, evals, iterations_to_90pct_final_segm_AP, final, ...}, also
merged into metrics.json). Adding one = one module defining a `SegmentEngine` subclass (its
model spec and `SegmentRun`) + one line in `ENGINES` (and its name in
`SegmentSettings.engine`).
"""

from __future__ import annotations

from typing import Any

from tempo_cli.segment.detectron2_engine import ENGINE as DETECTRON2
from tempo_cli.segment.loop import SegmentEngine
from tempo_cli.segment.train import ENGINE as TORCHVISION

ENGINES: dict[str, SegmentEngine[Any]] = {e.name: e for e in (TORCHVISION, DETECTRON2)}
