"""`tempo export`: write any checkpoint tempo loads as a torchvision or detectron2 file.

- torchvision: a plain `torch.save`d ResNet state dict (`conv1.weight`, `bn1.*`,
  `layer1..4.*`); when the checkpoint has a linear head it is written as `fc.*`, so the
  file loads into `torchvision.models.resnetXX(num_classes=C)`. Without a head there is no
  `fc` (load with `strict=False`, or set `model.fc = nn.Identity()` first).
- detectron2: SPEC.md's conversion, a `.pkl` of `{"model": {stem.*, res2..5.*: numpy},
  "__author__": "torchvision", "matching_heuristics": True}` for
  `MODEL.WEIGHTS` of a detectron2 ResNet config (backbone only).
Both are written atomically. `runs/<name>/` gets config.json and metrics.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tempo_cli import atomic
from tempo_cli.models.checkpoint import load_model
from tempo_cli.models.detectron2_format import save_detectron2_pkl
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.settings.export import ExportSettings


def export_state(
    state: dict[str, torch.Tensor],
    fmt: str,
    out: str | Path,
    linear: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a torchvision-keyed ResNet state dict (+ optional linear head) as `fmt`."""
    out = Path(out)
    if fmt == "detectron2":
        return save_detectron2_pkl(out, state)
    if fmt == "torchvision":
        full = {k: v.detach().cpu().clone() for k, v in state.items()}
        if linear is not None:
            full.update({f"fc.{k}": v.detach().cpu().clone() for k, v in linear.items()})
        atomic.torch_save(full, out)
        return out
    raise ValueError(f"unknown export format {fmt!r}")


def run(settings: ExportSettings) -> dict[str, Any]:
    """Load `settings.path`, write `settings.out` in `settings.format`; returns the record."""
    model = load_model(settings.path, settings.backbone)
    linear = model.linear.state_dict() if model.linear is not None else None
    state = model.backbone.state_dict()
    out = export_state(state, settings.format, settings.out, linear)
    record = {
        "checkpoint": str(settings.path),
        "source_format": model.source_format,
        "arch": model.arch,
        "format": settings.format,
        "out": str(out),
        "linear_head": linear is not None and settings.format == "torchvision",
    }
    with RunDir(settings) as run_dir:
        run_dir.save_config(settings)
        run_dir.update_metrics(**record)
    log(
        f"wrote {out} ({settings.format}, {model.arch} from a {model.source_format} checkpoint)",
        quiet=settings.quiet,
    )
    return record
