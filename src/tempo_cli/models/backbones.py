"""ResNet backbones from torchvision, without their classifier.

`build_resnet(arch, init)` returns a torchvision `ResNet` whose `fc` is `nn.Identity()`,
so `forward` maps images (N, 3, H, W) to features (N, FEATURE_DIM[arch]). Keeping the
torchvision module (rather than an `nn.Sequential`) keeps the torchvision state-dict key
names, which every checkpoint format is converted to and from.

ImageNet weights are the torchvision ones. They are read from torch hub's checkpoint
folder (`$TORCH_HOME/hub/checkpoints/<file>`, default `~/.cache/torch/hub/checkpoints`);
when the file is missing it is downloaded (30 s socket timeout, sha256 prefix of the file
name checked), unless `TEMPO_OFFLINE=1`, in which case no network is tried at all. A
missing file offline gives a TempoError saying where to put it (or to use --init random).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.places import NAMED_BASELINES

ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
FEATURE_DIM: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}

# The torchvision weights the reference used (`pretrained=True` = IMAGENET1K_V1).
_WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
}
_BUILDERS = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50}


def check_arch(arch: str, option: str = "--backbone") -> str:
    """Return `arch` if known, else raise UsageError naming `option`."""
    if arch not in ARCHS:
        raise UsageError(option, arch, "allowed: " + ", ".join(ARCHS))
    return arch


def offline() -> bool:
    """True when `TEMPO_OFFLINE` is set to 1/true/yes: never try the network."""
    return os.environ.get("TEMPO_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


def imagenet_weight_path(arch: str) -> Path:
    """Where torch hub keeps (and tempo looks for) the ImageNet weight file of `arch`."""
    check_arch(arch)
    url = _WEIGHTS[arch].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(url: str, path: Path, timeout: float = 30.0) -> None:
    """Fetch `url` to `path` atomically, checking the sha256 prefix in the file name.

    torchvision names its weight files `<arch>-<first 8+ hex digits of sha256>.pth`.
    A socket timeout keeps a machine without network from hanging (torch.hub has none).
    """
    import hashlib
    import re
    import urllib.request

    from tempo_cli import atomic

    h = hashlib.sha256()
    with atomic.atomic_path(path) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
        m = re.search(r"-([a-f0-9]{8,})\.", path.name)
        if m and not h.hexdigest().startswith(m.group(1)):
            raise OSError(f"sha256 mismatch for {url}")


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet state dict of `arch` (with its 1000-class `fc`).

    Reads the cached file; downloads it first when missing and not offline.
    Raises TempoError with one line naming the file and URL, or `--init random`.
    """
    path = imagenet_weight_path(arch)
    url = _WEIGHTS[arch].url
    hint = (
        f"ImageNet weights for {arch} are not available offline: download {url} and put it at "
        f"{path} (torch hub checkpoints dir; set TORCH_HOME to move it), or use --init random "
        "(--path random)"
    )
    if not path.is_file():
        if offline():
            raise TempoError(hint)
        try:
            _download(url, path)
        except Exception as e:  # any network/IO failure means the same to users
            raise TempoError(f"{hint} [download failed: {type(e).__name__}: {e}]") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TempoError(
            f"cannot read ImageNet weight file {path} ({type(e).__name__}); delete it and "
            f"download {url} again, or use --init random"
        ) from None
    if not isinstance(state, dict):
        raise TempoError(f"{path} is not a torchvision state dict; delete it and retry")
    return state


def build_resnet(arch: str = "resnet34", init: str = "random") -> tvm.ResNet:
    """A torchvision ResNet with `fc = nn.Identity()`.

    Args:
        arch: one of ARCHS.
        init: "random" (torchvision's default init) or "imagenet" (torchvision weights).

    Returns:
        ResNet; forward (N, 3, H, W) float -> (N, FEATURE_DIM[arch]).
    """
    check_arch(arch)
    if init not in NAMED_BASELINES:
        raise UsageError("--init", init, "allowed: imagenet, random or a checkpoint path")
    model = _BUILDERS[arch](weights=None)
    if init == "imagenet":
        state = imagenet_state_dict(arch)
        model.load_state_dict(state)
    model.fc = nn.Identity()
    return model


def arch_from_state(state: dict[str, torch.Tensor]) -> str:
    """Infer the ResNet arch from torchvision-keyed weights (block counts and widths).

    resnet50 has bottleneck blocks (`layer1.0.conv3`); resnet18 vs resnet34 differ in
    the number of blocks of layer3 (2 vs 6).
    """
    if any(k.startswith("layer1.0.conv3.") for k in state):
        blocks = {i for k in state if k.startswith("layer3.") for i in [int(k.split(".")[1])]}
        if len(blocks) != 6:
            raise TempoError(f"unsupported bottleneck ResNet ({len(blocks)} blocks in layer3)")
        return "resnet50"
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    if len(blocks) == 2:
        return "resnet18"
    if len(blocks) == 6:
        return "resnet34"
    raise TempoError(f"cannot tell the ResNet architecture ({len(blocks)} blocks in layer3)")
