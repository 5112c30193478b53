"""Modules rebuilt from loaded weights: backbone, projection head, linear head.

Each is built on the meta device and takes the loaded tensors as its parameters
(`load_state_dict(assign=True)`), so no random initialisation is computed and thrown
away (a resnet50's init costs more than reading its weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from tempo_cli.models.backbones import arch_from_state, build_resnet
from tempo_cli.models.projection_head import ProjectionHead

M = TypeVar("M", bound=nn.Module)


def materialize(build: Callable[[], M], state: dict[str, Any]) -> tuple[M, list[str]]:
    """`build()` on the meta device, then take the tensors of `state`.

    Floating tensors are cast to float32; a missing BatchNorm `num_batches_tracked`
    becomes 0. Returns (module, keys of `state` the module does not have). Raises
    RuntimeError when a key is missing or a shape differs.
    """
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    unexpected = [k for k in state if k not in expected]
    tensors = {k: torch.as_tensor(v) for k, v in state.items() if k in expected}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    for k in expected:
        if k not in tensors and k.endswith("num_batches_tracked"):
            tensors[k] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in tensors]
    bad = [k for k in tensors if tensors[k].shape != expected[k].shape]
    if missing or bad:
        shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in bad[:2]]
        raise RuntimeError(f"weights do not fit (missing {missing[:3]}, shapes {shapes})")
    module.load_state_dict(tensors, strict=True, assign=True)
    return module, unexpected


def backbone_from_state(state: dict[str, Any]) -> tuple[str, nn.Module]:
    """(arch, ResNet with fc = Identity) from torchvision-keyed weights; `fc.*` is ignored.

    The arch is inferred from the weights. Raises TempoError when it cannot be told and
    RuntimeError when the weights do not fit it.
    """
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    arch = arch_from_state(state)
    backbone, unexpected = materialize(lambda: build_resnet(arch), state)
    if unexpected:
        raise RuntimeError(f"backbone weights do not fit {arch} (unexpected {unexpected[:3]})")
    return arch, backbone


def head_from_state(state: dict[str, Any]) -> ProjectionHead:
    """The ProjectionHead whose shapes match a state dict keyed `0.weight` ... `6.bias`.

    Raises KeyError, ValueError or RuntimeError when `state` is not such a head.
    """
    hidden, in_dim = state["0.weight"].shape
    out_dim = state["6.weight"].shape[0]
    head, _ = materialize(lambda: ProjectionHead(int(in_dim), int(hidden), int(out_dim)), state)
    return head


def linear_from_state(state: dict[str, Any]) -> nn.Linear:
    """nn.Linear(d, C) from {"weight": (C, d), "bias": (C,)} (bias optional).

    Raises KeyError, IndexError or RuntimeError when `state` is not such a layer.
    """
    out_dim, in_dim = state["weight"].shape
    linear, _ = materialize(
        lambda: nn.Linear(int(in_dim), int(out_dim), bias="bias" in state), state
    )
    return linear
