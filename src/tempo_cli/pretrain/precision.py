"""The arithmetic of a pre-training step (`--precision`): small registered modes.

- `fp32`: float32 throughout, contiguous layout, no autocast: the reference's arithmetic
  (PyTorch's defaults, as the reference ran them).
- `bf16` / `fp16`: the forward runs under `torch.autocast` in that dtype, with model and
  inputs in channels-last layout (what tensor cores want). `fp16` on CUDA also scales the
  loss with a `GradScaler` (float16 gradients underflow); bfloat16 has float32's range
  and needs none, and on other devices autocast runs without a scaler.
- `auto` (the default): `bf16` on a CUDA GPU with native bfloat16 (Ampere and newer),
  `fp32` elsewhere (CPU, MPS, older GPUs).

The Barlow Twins loss always upcasts the embeddings and runs in float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from tempo_cli.errors import UsageError


@dataclass(frozen=True)
class Precision:
    """A concrete mode: `dtype` is the autocast dtype, None for plain float32."""

    name: str
    dtype: torch.dtype | None

    @property
    def mixed(self) -> bool:
        return self.dtype is not None

    @property
    def channels_last(self) -> bool:
        """Channels-last layout pays off with half-precision kernels; fp32 stays contiguous."""
        return self.mixed

    def resolve(self, device_type: str, cuda_bf16: bool) -> Precision:
        """This mode on `device_type` (`cuda_bf16`: the CUDA GPU supports bfloat16)."""
        if self.dtype == torch.bfloat16 and device_type == "cuda" and not cuda_bf16:
            raise UsageError(
                "--precision", self.name, "fp16 or fp32 (no native bfloat16 on this GPU)"
            )
        return self

    def autocast(self, device_type: str) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def uses_scaler(self, device_type: str) -> bool:
        """fp16 on CUDA only: float16 gradients underflow without loss scaling."""
        return self.dtype == torch.float16 and device_type == "cuda"

    def scaler(self, device_type: str) -> torch.amp.GradScaler:
        """A GradScaler, enabled as `uses_scaler` says (a disabled one is a pass-through)."""
        return torch.amp.GradScaler("cuda", enabled=self.uses_scaler(device_type))


@dataclass(frozen=True)
class AutoPrecision:
    """`auto`: bf16 where a CUDA GPU supports it, else fp32."""

    name: str = "auto"

    def resolve(self, device_type: str, cuda_bf16: bool) -> Precision:
        return BF16 if device_type == "cuda" and cuda_bf16 else FP32


FP32 = Precision("fp32", None)
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16)
PRECISIONS: dict[str, Precision | AutoPrecision] = {
    p.name: p for p in (AutoPrecision(), FP32, BF16, FP16)
}


def precision_for(name: str, device: torch.device) -> Precision:
    """The concrete mode that `--precision name` means on `device`."""
    # Native bfloat16 only (Ampere and newer, ROCm): emulated bfloat16 is slower than fp32.
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return PRECISIONS[name].resolve(device.type, cuda_bf16)
