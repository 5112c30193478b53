"""`tempo export --format safetensors | folder`: the backbone for timm, torchvision, the Hub.

- safetensors: the backbone's weights under the torchvision/timm ResNet key names (the
  same for both; no `fc.*`), with header metadata (`safetensors_format.METADATA_KEYS`).
  Loads with `timm.create_model(ARCH, pretrained=True, num_classes=0,
  pretrained_cfg_overlay=dict(file=FILE))` and with torchvision's
  `resnetNN().load_state_dict(load_file(FILE), strict=False)` (only `fc.*` missing).
- folder: the Hub's layout, `model.safetensors` + `config.json` (timm's pretrained-config
  shape, `num_classes: 0`, so `timm.create_model("local-dir:DIR", pretrained=True)` loads
  every key strictly) + `README.md` (the model card, `model_card.py`).

Every byte is made before anything is written. A new folder is filled under a temporary
name and renamed into place; an existing folder (e.g. a clone of a Hub repository) gets
each of the three files replaced atomically and keeps its other files.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tempo_cli import __version__, atomic
from tempo_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tempo_cli.errors import UsageError
from tempo_cli.models.checkpoint import LoadedModel
from tempo_cli.models.model_card import CardFacts, model_card
from tempo_cli.models.safetensors_format import (
    CARD_FILE,
    CONFIG_FILE,
    SUFFIX,
    WEIGHTS_FILE,
    timm_config,
)
from tempo_cli.models.study_evaluation import ArmEvaluation

DEFAULT_INPUT = 224  # timm's and torchvision's input side, when the checkpoint records none


@dataclass(frozen=True)
class ExportSource:
    """Where the exported model came from (the header metadata and the card say it)."""

    spec: str  # the --path as given (or the study arm's model)
    content_id: str
    evaluation: ArmEvaluation | None = None


def header_metadata(model: LoadedModel, source: ExportSource) -> dict[str, str]:
    """The safetensors header: architecture, input size, normalisation, provenance."""
    side = model.image_size or DEFAULT_INPUT
    meta = {
        "format": "pt",
        "architecture": model.arch,
        "input_size": json.dumps([3, side, side]),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "tempo_version": __version__,
        "source_format": model.source_format,
        "source_content_id": source.content_id,
    }
    if model.image_size:
        meta["image_size"] = str(model.image_size)
    settings = model.meta.get("settings")
    if isinstance(settings, dict):
        meta["pretrain"] = json.dumps(settings, sort_keys=True)
    for key in ("epoch", "step"):
        if isinstance(model.meta.get(key), int):
            meta[key] = str(model.meta[key])
    if source.evaluation is not None:
        record = asdict(source.evaluation)
        record.pop("model_path")  # a path on the exporter's disk says nothing to a reader
        meta["evaluation"] = json.dumps(record, sort_keys=True)
    return meta


def safetensors_bytes(model: LoadedModel, metadata: dict[str, str]) -> bytes:
    """The backbone's state dict (no fc: the backbone's fc is an Identity) as safetensors."""
    from safetensors.torch import save

    state = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.backbone.state_dict().items()
        if not k.startswith("fc.")
    }
    return save(state, metadata=metadata)


def check_safetensors_out(out: Path) -> None:
    """timm and the Hub tell the format by the suffix: refuse another before any work."""
    if out.suffix.lower() != SUFFIX:
        raise UsageError(
            "--out", str(out), "a file name ending in .safetensors (timm reads it by the suffix)"
        )
    if out.is_dir():
        raise UsageError("--out", str(out), "a file to write, not an existing folder")


def check_folder_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError("--out", str(out), "a folder to write (new or existing), not a file")


def write_safetensors_file(model: LoadedModel, out: Path, source: ExportSource) -> Path:
    atomic.write_bytes(out, safetensors_bytes(model, header_metadata(model, source)))
    return out


def folder_files(model: LoadedModel, out: Path, source: ExportSource) -> dict[str, bytes]:
    """The folder's three files, by name."""
    metadata = header_metadata(model, source)
    facts = CardFacts(
        name=out.name,
        source=source.spec,
        content_id=source.content_id,
        tempo_version=__version__,
        image_size=model.image_size or DEFAULT_INPUT,
        evaluation=source.evaluation,
    )
    about = {
        "exported_by": f"tempo {__version__}",
        "source_format": model.source_format,
        "source_content_id": source.content_id,
    }
    config = timm_config(model.arch, model.feature_dim, metadata, about)
    return {
        WEIGHTS_FILE: safetensors_bytes(model, metadata),
        CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode("utf-8"),
        CARD_FILE: model_card(model, facts).encode("utf-8"),
    }


def write_folder(model: LoadedModel, out: Path, source: ExportSource) -> Path:
    """Write the model folder `out` (see the module docstring for how, atomically)."""
    files = folder_files(model, out, source)
    if out.is_dir():
        for name, data in files.items():
            atomic.write_bytes(out / name, data)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # the mode a plain mkdir gives (not mkdtemp's 0700): the folder is shared
    try:
        for name, data in files.items():
            atomic.write_bytes(tmp / name, data)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
