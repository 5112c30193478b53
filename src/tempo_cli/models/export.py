"""`tempo export`: write any checkpoint tempo loads as a torchvision, detectron2, reference,
safetensors file or a model folder.

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
- safetensors, folder: the backbone for timm, torchvision and the Hugging Face Hub, with
  metadata and (folder) a model card; `export_safetensors.py`. `--study runs/NAME --arm
  ARM` adds what the study measured of that arm (and gives the arm's model as `--path`).
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
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.models import export_safetensors as st
from tempo_cli.models.checkpoint import LoadedModel, load_model
from tempo_cli.models.detectron2_format import save_detectron2_pkl
from tempo_cli.models.study_evaluation import read_arm
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
    takes_study: bool = False  # records a study arm's evaluation (--study --arm)

    def check_out(self, out: Path) -> None:
        """Refuse an `--out` this format cannot write (UsageError), before any work."""
        return None  # any file name will do for the torch and pickle formats

    @abstractmethod
    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
        """Write `model` in this format to `out`; returns the path written."""


class TorchvisionFormat(ExportFormat):
    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
        full = _cpu(model.backbone.state_dict())
        if model.linear is not None:
            full.update(_cpu(model.linear.state_dict(), "fc."))
        atomic.torch_save(full, out)
        return out


class Detectron2Format(ExportFormat):
    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
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
    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
        atomic.torch_save(reference_state(model), out)
        return out


class SafetensorsFormat(ExportFormat):
    def check_out(self, out: Path) -> None:
        st.check_safetensors_out(out)

    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
        return st.write_safetensors_file(model, out, source)


class FolderFormat(ExportFormat):
    def check_out(self, out: Path) -> None:
        st.check_folder_out(out)

    def write(self, model: LoadedModel, out: Path, source: st.ExportSource) -> Path:
        return st.write_folder(model, out, source)


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        TorchvisionFormat("torchvision", writes_linear=True),
        Detectron2Format("detectron2"),
        ReferenceFormat("reference", needs_linear=True, writes_linear=True),
        SafetensorsFormat("safetensors", takes_study=True),
        FolderFormat("folder", takes_study=True),
    )
}


def no_linear_head(spec: str, fmt: str) -> str:
    """The one line for a classifier format asked of a checkpoint without a head."""
    return (
        f"{spec} has no linear classification head, and --format {fmt} is a classifier; "
        f"create one with `tempo eval linear --path {spec} --save-model FILE` and export FILE"
    )


def _source(settings: ExportSettings, fmt: ExportFormat) -> tuple[str, str, Any]:
    """(--path, backbone, the study arm's evaluation or None) after checking the options."""
    if (settings.study is None) != (settings.arm is None):
        given = "--study" if settings.study is not None else "--arm"
        value = settings.study if settings.study is not None else settings.arm
        raise UsageError(given, value, "--study and --arm go together")
    evaluation = None
    if settings.study is not None and settings.arm is not None:
        if not fmt.takes_study:
            raise UsageError("--study", settings.study, "only with --format safetensors or folder")
        evaluation = read_arm(settings.study, settings.arm)
    path = settings.path
    if path is None:
        if evaluation is None:
            raise UsageError("--path", None, "a checkpoint (or --study with --arm)")
        path = evaluation.model_path
    backbone = evaluation.backbone if evaluation and not settings.path else settings.backbone
    return path, backbone, evaluation


def run(settings: ExportSettings) -> dict[str, Any]:
    """Load `settings.path`, write `settings.out` in `settings.format`; returns the record."""
    from tempo_cli.models.content_id import checkpoint_id

    fmt = FORMATS[settings.format]
    fmt.check_out(Path(settings.out))
    path, backbone, evaluation = _source(settings, fmt)
    model = load_model(path, backbone)
    if fmt.needs_linear and model.linear is None:
        raise TempoError(no_linear_head(path, fmt.name))
    source = st.ExportSource(path, checkpoint_id(path, backbone), evaluation)
    out = fmt.write(model, Path(settings.out), source)
    record = {
        "checkpoint": path,
        "source_format": model.source_format,
        "arch": model.arch,
        "format": fmt.name,
        "out": str(out),
        "linear_head": model.linear is not None and fmt.writes_linear,
    }
    if evaluation is not None:
        record.update(study=evaluation.study, arm=evaluation.arm)
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
