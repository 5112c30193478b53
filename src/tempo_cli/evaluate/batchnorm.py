"""BatchNorm statistics of an evaluated backbone: the `--bn-stats` modes.

A frozen backbone's features depend on which statistics its BatchNorm layers normalise
with. Each mode is a small registered object (`BN_MODES`):

- `running`: eval mode, the checkpoint's running statistics; a feature does not depend on
  its batch, so features are computed once and shared by every run (the standard).
- `batch`: the reference's quirk (SPEC.md "Linear evaluation"): the backbone stays in
  train mode, so each batch is normalised with its own statistics. As the reference's
  shuffled loaders, batches are seeded shuffles, never class-sorted, and drawn anew for
  every run: run r's training batches are the probe's batches of run r (the same
  permutation, `linear_probe.run_generator(seed, r)`), its test batches a shuffle of its
  own; the features are computed anew for every run.
- `adapt` (AdaBN): the running statistics are re-estimated on the evaluation images (the
  training split, then the test split, in seeded shuffled batches; no gradient; momentum
  None = the exact average over batches), then features are computed in eval mode.

`eval semisup` trains BatchNorm itself, so it takes `running` and `batch` only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from tempo_cli.errors import TempoError, UsageError

#: BatchNorm batches of the reference's feature pass (train, test): linear and knn.
REFERENCE_TRAIN_BATCH = 24
REFERENCE_TEST_BATCH = 10
#: Test batches of the reference's semi-supervised protocol (train mode while testing).
REFERENCE_SEMISUP_TEST_BATCH = 20
#: Images per forward pass where the batch does not change the result (eval mode).
EVAL_BATCH = 64
#: Offset between a run's probe generator and its test-shuffle generator.
_TEST_STREAM = 0x7E57_5EED


@dataclass(frozen=True)
class BnBatches:
    """BatchNorm batch sizes of `--bn-batch-size TRAIN,TEST` as resolved for a protocol."""

    train: int
    test: int

    @classmethod
    def resolve(cls, given: tuple[int, int] | None, train: int, test: int) -> BnBatches:
        """`given` (from `--bn-batch-size`), or the protocol's defaults (`auto`)."""
        return cls(*given) if given is not None else cls(int(train), int(test))

    def as_list(self) -> list[int]:
        return [self.train, self.test]


def train_order(n: int, seed: int, run: int) -> Tensor:
    """Run `run`'s shuffle of the n training items: the probe's batch order of that run."""
    from tempo_cli.evaluate.linear_probe import batch_order, run_generator

    return batch_order(n, 0, run_generator(seed, run))


def test_generator(seed: int, run: int) -> torch.Generator:
    """The generator of run `run`'s test shuffles (independent of its probe generator)."""
    from tempo_cli.evaluate.linear_probe import run_generator

    g = torch.Generator()
    g.manual_seed((run_generator(seed, run).initial_seed() + _TEST_STREAM) % (2**63 - 1))
    return g


def test_order(m: int, seed: int, run: int) -> Tensor:
    """Run `run`'s shuffle of the m test items."""
    return torch.randperm(m, generator=test_generator(seed, run))


def blocks(n: int, batch_size: int, order: Tensor | None = None) -> list[Tensor]:
    """Index blocks of a pass over n items (in `order` when given); a trailing block of 1
    joins the previous one (BatchNorm in train mode cannot normalise one 1x1 feature map)."""
    idx = torch.arange(n) if order is None else order
    out = list(idx.split(batch_size))
    if len(out) > 1 and out[-1].numel() == 1:
        out[-2:] = [torch.cat(out[-2:])]
    return out


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    batch_size: int = EVAL_BATCH,
    device: torch.device | str = "cpu",
    *,
    batch_stats: bool = False,
    order: Tensor | None = None,
) -> Tensor:
    """Backbone features of uint8 images.

    Args:
        backbone: (N, 3, H, W) float -> (N, d) (or (N, d, 1, 1)); never modified (train
            mode works on a copy, so the running statistics stay untouched).
        images: uint8 (N, 3, S, S), normalised batch by batch with the ImageNet statistics.
        batch_size: images per forward pass (changes the result only with batch_stats).
        batch_stats: True = train mode (each batch normalised with its own statistics).
        order: optional permutation (N,) giving the batch composition.
    Returns:
        float32 (N, d) on CPU, row k = image k (whatever `order`).
    """
    from tempo_cli.data.transforms import normalize_uint8

    device = torch.device(device)
    n = images.shape[0]
    if batch_stats:
        model = copy.deepcopy(backbone).to(device).train()
    else:
        model = _inference_copy(copy.deepcopy(backbone).to(device).eval())
    # channels_last: oneDNN's fastest convolution layout on CPU (and tensor cores on GPU)
    model = model.to(memory_format=torch.channels_last)
    out: Tensor | None = None
    for idx in blocks(n, batch_size, order):
        x = normalize_uint8(images[idx].to(device)).contiguous(memory_format=torch.channels_last)
        f = torch.flatten(model(x), 1).float().cpu()
        if out is None:
            out = torch.empty(n, f.shape[1])
        out[idx] = f
    if out is None:
        raise TempoError("no images to compute features of")
    return out


def _inference_copy(backbone: nn.Module) -> nn.Module:
    """An eval-mode module with each BatchNorm folded into its convolution (same function,
    fewer passes over memory); the module itself when it cannot be traced."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(backbone, inplace=True)
    except Exception:  # any tracing failure: run the module as it is
        return backbone


@torch.no_grad()
def adapt_batchnorm(
    backbone: nn.Module,
    passes: list[tuple[Tensor, int]],
    g: torch.Generator,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A copy of `backbone` whose BatchNorm running statistics are re-estimated (AdaBN).

    Args:
        passes: (uint8 images (N, 3, S, S), batch size) in order (train split, then test
            split); each is gone through once in train mode, in batches shuffled by `g`.
    Returns:
        the copy in eval mode: running mean / var = the average over all batches of the
        batch mean / unbiased variance (momentum None), num_batches_tracked = batches.
    """
    from tempo_cli.data.transforms import normalize_uint8

    model = copy.deepcopy(backbone).to(device)
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    model.train()
    for images, batch_size in passes:
        for idx in blocks(len(images), batch_size, torch.randperm(len(images), generator=g)):
            model(normalize_uint8(images[idx].to(device)))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


@dataclass(frozen=True)
class PassContext:
    """What one (train split, test split, run) feature pass is made with.

    seed, run: pick the shuffles (batch mode: run `run`'s; adapt: run 0's).
    batches: BatchNorm batch sizes. splits: the two splits' names and content stamps
    ("<split>@<stamp>", train first), for modes whose statistics come from both.
    """

    seed: int
    run: int
    batches: BnBatches
    splits: tuple[str, str]
    device: torch.device


class BnMode:
    """Base of the `--bn-stats` modes.

    name: the option's value. per_run: frozen features are drawn anew for every run.
    needs_pair: features are made by a module `prepare` makes from both splits' images.
    fine_tunes: `eval semisup` takes it. batch_sizes_matter: `--bn-batch-size` applies
    (recorded in metrics.json). test_in_train_mode: semisup tests in train mode.
    """

    name: ClassVar[str]
    per_run: ClassVar[bool] = False
    needs_pair: ClassVar[bool] = False
    fine_tunes: ClassVar[bool] = True
    batch_sizes_matter: ClassVar[bool] = False
    test_in_train_mode: ClassVar[bool] = False

    def describe(self, batches: BnBatches) -> dict[str, object]:
        """How features were made, for metrics.json: the mode, and its batch sizes where
        they matter."""
        out: dict[str, object] = {"bn_stats": self.name}
        if self.batch_sizes_matter:
            out["bn_batch_size"] = batches.as_list()
        return out

    def key(self, ctx: PassContext, role: str) -> dict[str, object]:
        """What the features of the split in `role` ("train"/"test") depend on beyond the
        model, the split's images and their size (part of the feature-cache key)."""
        return {"bn_stats": self.name}

    def prepare(
        self, backbone: nn.Module, train: Tensor, test: Tensor, ctx: PassContext
    ) -> nn.Module:
        """The module features are computed with, made from both splits' uint8 images
        (train (N, 3, S, S), test (M, 3, S, S)); called only when `needs_pair`."""
        return backbone

    def extract(self, backbone: nn.Module, images: Tensor, role: str, ctx: PassContext) -> Tensor:
        """Features (N, d) float32 on CPU of uint8 images (N, 3, S, S) in `role`."""
        return extract_features(backbone, images, EVAL_BATCH, ctx.device)

    def test_blocks(self, m: int, batches: BnBatches, g: torch.Generator) -> list[Tensor]:
        """Index blocks of one semisup test pass over m images (`g`: the run's test
        generator, drawn from at every pass by the modes that shuffle)."""
        return blocks(m, EVAL_BATCH)


class RunningStats(BnMode):
    name = "running"


class BatchStats(BnMode):
    name = "batch"
    per_run = True
    batch_sizes_matter = True
    test_in_train_mode = True

    def key(self, ctx: PassContext, role: str) -> dict[str, object]:
        size = ctx.batches.train if role == "train" else ctx.batches.test
        return {
            "bn_stats": self.name,
            "role": role,
            "seed": ctx.seed,
            "run": ctx.run,
            "batch": size,
        }

    def extract(self, backbone: nn.Module, images: Tensor, role: str, ctx: PassContext) -> Tensor:
        n = images.shape[0]
        if role == "train":
            order, size = train_order(n, ctx.seed, ctx.run), ctx.batches.train
        else:
            order, size = test_order(n, ctx.seed, ctx.run), ctx.batches.test
        return extract_features(backbone, images, size, ctx.device, batch_stats=True, order=order)

    def test_blocks(self, m: int, batches: BnBatches, g: torch.Generator) -> list[Tensor]:
        # a shuffled loader: a new permutation at every pass
        return blocks(m, batches.test, torch.randperm(m, generator=g))


class AdaptedStats(BnMode):
    name = "adapt"
    needs_pair = True
    fine_tunes = False
    batch_sizes_matter = True

    def key(self, ctx: PassContext, role: str) -> dict[str, object]:
        # the statistics come from both splits, so both name the features of either
        return {
            "bn_stats": self.name,
            "seed": ctx.seed,
            "batches": ctx.batches.as_list(),
            "adapted_on": list(ctx.splits),
        }

    def prepare(
        self, backbone: nn.Module, train: Tensor, test: Tensor, ctx: PassContext
    ) -> nn.Module:
        passes = [(train, ctx.batches.train), (test, ctx.batches.test)]
        return adapt_batchnorm(backbone, passes, test_generator(ctx.seed, 0), ctx.device)


#: The `--bn-stats` modes by name (the settings' Literal lists the same names; a test checks).
BN_MODES: dict[str, BnMode] = {m.name: m for m in (RunningStats(), BatchStats(), AdaptedStats())}


def bn_mode(name: str) -> BnMode:
    """The mode called `name`; UsageError (exit 2) listing the known ones otherwise."""
    try:
        return BN_MODES[name]
    except KeyError:
        raise UsageError("--bn-stats", name, f"one of {', '.join(BN_MODES)}") from None
