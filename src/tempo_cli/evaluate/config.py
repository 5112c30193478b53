"""One frozen object for a protocol's hyper-parameters, read from the settings.

The core functions of `evaluate/` (batched probe, reference loop, fine-tuning) take a
`ProbeConfig` instead of restating `--runs`, `--iterations`, ... as keyword defaults: the
defaults live once, in `settings/evaluate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from tempo_cli.settings.evaluate import EvalHeadSettings, EvalLinearSettings
from tempo_cli.settings.pretrain import EVAL_BATCH_SIZE, EVAL_ITERATIONS, EVAL_LR, EVAL_RUNS


@dataclass(frozen=True)
class ProbeConfig:
    """How R fresh linear heads are trained and scored (linear and semisup protocols).

    runs: R heads, run r seeded by `linear_probe.run_generator(seed, r)`.
    iterations: T SGD steps per run; batch_size: training items per step.
    lr, weight_decay: plain SGD (weight decay on weight and bias, as torch's SGD).
    bn_stats: BatchNorm statistics of the backbone, a `--bn-stats` mode
        (`evaluate/batchnorm.py`: running, batch = the reference's train mode, adapt).
    bn_batch_size: `--bn-batch-size` (train, test); None = the protocol's defaults.
    eval_every: test accuracy every K steps; the linear protocol has no such option and
        scores every step (SPEC.md), hence the default.
    lr_grid: the learning rates of an `eval linear --lr` grid (empty: just `lr`); every
        lr's heads are trained in one batched pass.
    """

    runs: int
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    bn_stats: Literal["running", "batch", "adapt"]
    eval_every: int = 1
    bn_batch_size: tuple[int, int] | None = None
    lr_grid: tuple[float, ...] = ()

    @property
    def lrs(self) -> tuple[float, ...]:
        """The learning rates to train: the grid, else (lr,)."""
        return self.lr_grid or (float(self.lr),)

    @classmethod
    def from_settings(cls, settings: EvalHeadSettings) -> ProbeConfig:
        """The fields of that name in `settings` (an `eval linear|semisup` settings object)."""
        known = type(settings).model_fields
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name in known}
        values["bn_batch_size"] = settings.bn_batches()  # "TRAIN,TEST" | "auto" -> tuple | None
        if isinstance(settings, EvalLinearSettings):  # `--lr` may be a comma list
            grid = settings.lr_grid()
            values["lr"], values["lr_grid"] = grid[0], grid if len(grid) > 1 else ()
        return cls(**values)

    @classmethod
    def default(cls, settings_cls: type, **changes: Any) -> ProbeConfig:
        """The defaults of `settings_cls` (e.g. `EvalLinearSettings`), with `changes`."""
        defaults = {
            name: info.default
            for name, info in settings_cls.model_fields.items()
            if name in {f.name for f in fields(cls)} and name != "bn_batch_size"
        }
        if isinstance(defaults.get("lr"), str):  # eval linear's `--lr` grid string
            defaults["lr"] = float(defaults["lr"].split(",")[0])
        return cls(**{**defaults, **changes})

    def with_seed(self, seed: int) -> ProbeConfig:
        return replace(self, seed=int(seed))


#: `tempo pretrain --eval` (SPEC.md): 3 runs, batches of 10, 3,000 iterations, lr 0.01 on
#: the full train split (the numbers live in settings/pretrain.py, whose `--eval` help
#: states them); everything else as `tempo eval linear`. The caller sets the seed.
PRETRAIN_EVAL_PROBE = ProbeConfig.default(
    EvalLinearSettings,
    runs=EVAL_RUNS,
    batch_size=EVAL_BATCH_SIZE,
    iterations=EVAL_ITERATIONS,
    lr=EVAL_LR,
)
