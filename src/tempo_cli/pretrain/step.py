"""One Barlow Twins training step: the twin model, optimiser, precision, DDP.

`TwinStep(twin, settings, dinfo, device)` builds everything a step needs once; calling it
with a uint8 pair batch normalises on the device, runs backbone + head on both views,
takes the Barlow Twins loss over the (global) batch and makes one optimiser step.
`--precision` (pretrain.precision) decides autocast, layout and gradient scaling.
`--augment light|strong` augments the two views on the device first (pretrain.augment);
with `--augment none` the batches go to the model exactly as the reference's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss
from tempo_cli.models.projection_head import ProjectionHead
from tempo_cli.pretrain.augment import AUGMENTS, PairAugmenter
from tempo_cli.pretrain.batches import Normalizer
from tempo_cli.pretrain.distributed import DistInfo
from tempo_cli.pretrain.precision import precision_for
from tempo_cli.settings.pretrain import PretrainSettings


class TwinModel(nn.Module):
    """Backbone + projection head applied to both frames of each pair.

    Both views go through one `forward` (so DDP sees one forward per backward) but as two
    separate passes, as the reference does: BatchNorm statistics are per view.
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_a, x_b: (B, 3, S, S) normalised -> z_a, z_b: (B, D) embeddings."""
        return self.head(self.backbone(x_a)), self.head(self.backbone(x_b))


#: Devices with PyTorch's fused AdamW kernel (one kernel for every parameter's update).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def make_optimizer(params: list[nn.Parameter], s: PretrainSettings) -> torch.optim.Optimizer:
    """SGD (with --momentum, the reference's) or AdamW at --lr / --weight-decay.

    AdamW is the fused implementation where PyTorch has one (CPU, CUDA): the same update
    rule as the per-parameter loop (PyTorch's CPU default) up to float rounding, several
    times faster to apply (benchmarks/optimizer_step.py). params: already on their
    training device.
    """
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    fused = params[0].device.type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, fused=fused or None)


class TwinStep:
    """Build once, then `step(xa_u8, xb_u8, epoch, batch) -> loss` (0-d, on the device).

    `twin` is the module whose parameters and buffers are trained and saved (moved to the
    device, SyncBatchNorm on multi-GPU); `model` is what runs (DDP-wrapped when distributed).
    """

    def __init__(
        self, twin: TwinModel, s: PretrainSettings, dinfo: DistInfo, device: torch.device
    ) -> None:
        cuda = device.type == "cuda"
        self.precision = precision_for(s.precision, device)
        if cuda and dinfo.distributed:
            # PyTorch's SyncBatchNorm only runs on GPUs; on CPU each rank keeps its own
            # BatchNorm batch statistics (DDP still syncs the running buffers from rank 0).
            twin = nn.SyncBatchNorm.convert_sync_batchnorm(twin)
        twin = twin.to(device)
        if self.precision.channels_last:
            twin = twin.to(memory_format=torch.channels_last)
        self.twin = twin
        self.opt = make_optimizer([p for p in twin.parameters() if p.requires_grad], s)
        self.scaler = self.precision.scaler(device.type)
        self.autocast: AbstractContextManager = self.precision.autocast(device.type)
        self.model: nn.Module = twin
        if dinfo.distributed:
            self.model = DistributedDataParallel(twin, device_ids=[device.index] if cuda else None)
        self.loss_fn = BarlowTwinsLoss(s.l, gather_distributed=dinfo.distributed, std=s.loss_std)
        self.normalize = Normalizer(device, channels_last=self.precision.channels_last)
        recipe = AUGMENTS[s.augment]
        self.device = device
        self.augment = (
            None
            if recipe.views is None
            else PairAugmenter(recipe, s.seed, dinfo.rank, s.crop_scale)
        )

    def __call__(
        self, xa_u8: torch.Tensor, xb_u8: torch.Tensor, epoch: int = 0, batch: int = 0
    ) -> torch.Tensor:
        """uint8 (B, 3, S, S) pair batch on the host -> the step's loss (before the step).

        (epoch, batch) is the step's place in the run: it seeds the augmentation draws.
        """
        if self.augment is None:
            x_a, x_b = self.normalize(xa_u8), self.normalize(xb_u8)
        else:
            dev = self.device
            xa = xa_u8.to(dev, non_blocking=True)
            xb = xb_u8.to(dev, non_blocking=True)
            v_a, v_b = self.augment(xa, xb, epoch, batch)  # float [0, 1]
            x_a, x_b = self.normalize(v_a), self.normalize(v_b)
        with self.autocast:
            z_a, z_b = self.model(x_a, x_b)
        loss = self.loss_fn(z_a, z_b)  # float32 inside, over the global batch
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss
