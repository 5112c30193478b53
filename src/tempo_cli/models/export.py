"""`tempo export`: write any checkpoint tempo loads as a torchvision, detectron2 or reference file.

Formats are `ExportFormat` objects in `FORMATS` (the names `ExportSettings.format` accepts):

- torchvision: a plain `torch.save`d ResNet state dict (`conv1.weight`, `bn1.*`,
  `layer1..4.*`); when the checkpoint has a linear head it is written as `fc.*`, so the
  file loads into `torchvision.models.resnetXX(num_classes=C)`. Without a head there is no
  `fc` (load with `strict=False`, or set `model.fc = nn.Identity()` first).
- detectron2: SPEC.md's conversion, a `.pkl` of `{"model": {stem.*, res2..5.*: numpy},
  "__author__": "torchvision", "matching_heuristics": True}` for
  `MODEL.WEIGHTS` of a detectron2 ResNet config (backbone only).
- reference: the state dict of the reference's classifier (`TempoLinear`): `backbone` =
  `nn.Sequential(*list(resnet.children())[:-1])` (keys `backbone.0.*` conv1, `backbone.1.*`
  bn1, `backbone.4..7.*` layer1..4) and `linear = nn.Linear(d, C)` (d = 512 for ResNet-18/34,
  2048 for ResNet-50), so the reference's linear, semi-supervised and relevance code loads
  it with `strict=True`. It needs a linear head (`tempo eval linear --save-model` makes one).
All are written atomically. `runs/<name>/` gets config.json and metrics.json.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import atomic
from tempo_cli.errors import TempoError
from tempo_cli.models.checkpoint import LoadedModel, load_model
from tempo_cli.models.detectron2_format import save_detectron2_pkl
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.settings.export import ExportSettings


def _cpu(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu().clone() for k, v in state.items()}


@dataclass(frozen=True)
class ExportFormat(ABC):
    """One output format: how a loaded checkpoint becomes a file.

    `needs_linear`: the format is a classifier, so a checkpoint without a linear head is
    refused before anything is written. `writes_linear`: the head goes into the file.
    """

    name: str
    needs_linear: bool = False
    writes_linear: bool = False

    @abstractmethod
    def write(self, model: LoadedModel, out: Path) -> Path:
        """Write `model` in this format to `out`; returns the path written."""


class TorchvisionFormat(ExportFormat):
    def write(self, model: LoadedModel, out: Path) -> Path:
        full = _cpu(model.backbone.state_dict())
        if model.linear is not None:
            full.update(_cpu(model.linear.state_dict(), "fc."))
        atomic.torch_save(full, out)
        return out


class Detectron2Format(ExportFormat):
    def write(self, model: LoadedModel, out: Path) -> Path:
        return save_detectron2_pkl(out, model.backbone.state_dict())


def sequential_index(backbone: nn.Module) -> dict[str, str]:
    """torchvision child name -> its index in `nn.Sequential(*list(resnet.children())[:-1])`.

    Read off the module itself (conv1 0, bn1 1, relu 2, maxpool 3, layer1..4 4..7,
    avgpool 8), so the keys are exactly those the reference's module has.
    """
    names = [name for name, _ in backbone.named_children()][:-1]  # [:-1] drops fc
    return {name: str(i) for i, name in enumerate(names)}


def reference_state(model: LoadedModel) -> dict[str, torch.Tensor]:
    """The reference `TempoLinear` state dict: `backbone.N.*` + `linear.weight/bias`."""
    if model.linear is None:
        raise ValueError("reference_state needs a linear head")
    index = sequential_index(model.backbone)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.backbone.state_dict().items():
        top, _, rest = key.partition(".")
        state[f"backbone.{index[top]}.{rest}"] = value.detach().cpu().clone()
    state.update(_cpu(model.linear.state_dict(), "linear."))
    return state


class ReferenceFormat(ExportFormat):
    def write(self, model: LoadedModel, out: Path) -> Path:
        atomic.torch_save(reference_state(model), out)
        return out


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        TorchvisionFormat("torchvision", writes_linear=True),
        Detectron2Format("detectron2"),
        ReferenceFormat("reference", needs_linear=True, writes_linear=True),
    )
}


def no_linear_head(spec: str, fmt: str) -> str:
    """The one line for a classifier format asked of a checkpoint without a head."""
    return (
        f"{spec} has no linear classification head, and --format {fmt} is a classifier; "
        f"create one with `tempo eval linear --path {spec} --save-model FILE` and export FILE"
    )


def run(settings: ExportSettings) -> dict[str, Any]:
    """Load `settings.path`, write `settings.out` in `settings.format`; returns the record."""
    fmt = FORMATS[settings.format]
    model = load_model(settings.path, settings.backbone)
    if fmt.needs_linear and model.linear is None:
        raise TempoError(no_linear_head(str(settings.path), fmt.name))
    out = fmt.write(model, Path(settings.out))
    record = {
        "checkpoint": str(settings.path),
        "source_format": model.source_format,
        "arch": model.arch,
        "format": fmt.name,
        "out": str(out),
        "linear_head": model.linear is not None and fmt.writes_linear,
    }
    if model.linear is not None and fmt.writes_linear:
        record["classes"] = model.linear.out_features
    with RunDir(settings) as run_dir:
        run_dir.save_config(settings)
        run_dir.update_metrics(**record)
    log(
        f"wrote {out} ({fmt.name}, {model.arch} from a {model.source_format} checkpoint)",
        quiet=settings.quiet,
    )
    return record
