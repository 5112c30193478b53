"""Watching the features while pre-training: `--monitor`, label-free signals, `--keep best`.

At each epoch end (and every `--monitor-every` steps) `Monitor.measure` scores the current
backbone, with the same code as `tempo eval` (no second implementation):

- `knn`: `evaluate.knn.knn_result` (k=20, T=0.07, cosine: EvalKnnSettings' defaults) on
  features made by an `evaluate.features.FeatureSource` (no disk cache: model_id None;
  BatchNorm running statistics, as `tempo eval knn`'s default), training on
  `--monitor-samples-pc N` images per class (train-N/, or drawn from train/ by
  `resolve_training_labels`), scored on test/ and, when the root has one, on val/.
- `linear`: `evaluate.linear.linear_curves` with a reduced probe (LINEAR_RUNS run of
  LINEAR_ITERATIONS iterations, the rest `tempo eval linear`'s defaults).
- always, on a fixed sample of `--monitor-pairs` training pairs (drawn once by its own
  generator): RankMe and feature std of the backbone and projector outputs, and the
  Barlow Twins loss terms on those pairs (pretrain.label_free), in eval mode.

Monitoring never changes training: features are computed on copies in eval mode under
no_grad (`extract_features` deep-copies the backbone), so BatchNorm statistics, train
mode and every RNG stay as they were. The best epoch (`--keep best`) is chosen on val/
when the monitor data has it, else on test/, and by RankMe without labels (`selected_on`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.labelled_data import detect_form, open_labelled
from tempo_cli.data.sequences import FrameStore
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.evaluate.batchnorm import extract_features
from tempo_cli.evaluate.features import TEST_SPLIT, FeatureRecipe, FeatureSource
from tempo_cli.evaluate.splits import feature_splits
from tempo_cli.evaluate.train_labels import resolve_training_labels, selection_split
from tempo_cli.pretrain.batches import PairSampler
from tempo_cli.pretrain.distributed import DistInfo
from tempo_cli.pretrain.final import find_labelled_root
from tempo_cli.pretrain.label_free import barlow_terms, collapse_warning, feature_std, rankme
from tempo_cli.pretrain.step import TwinModel
from tempo_cli.report.progress import log
from tempo_cli.settings.evaluate import EvalKnnSettings, EvalLinearSettings
from tempo_cli.settings.pretrain import PretrainSettings

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from tempo_cli.report.run_dir import RunDir

#: The reduced linear probe of `--monitor linear`.
LINEAR_RUNS = 1
LINEAR_ITERATIONS = 300
#: Images per forward pass of the label-free signals (eval mode: only speed depends on it).
PAIR_BATCH = 256
#: Offset of the pair sample's generator from --seed (a stream of its own).
_PAIR_STREAM = 0x3D_0A17


@dataclass(frozen=True)
class MonitorPlan:
    """What is monitored: `kind` (knn|linear|none), on `root` (None for none), choosing the
    best on `selected_on` (val, test, or rankme without labels)."""

    kind: str
    root: Path | None
    samples_pc: int
    selected_on: str

    @property
    def metric(self) -> str | None:
        """The accuracy key of a record (knn, linear), None without labels."""
        return None if self.kind == "none" else self.kind

    @property
    def val_split(self) -> str | None:
        """The split the best epoch is chosen on when it is not test (val), else None."""
        return "val" if self.selected_on == "val" else None

    @property
    def selection_key(self) -> str:
        """The record key the best epoch is chosen by: the accuracy on val when there is
        one (`knn_val`), else on test (`knn`); `rankme` without labels."""
        if self.metric is None:
            return "rankme"
        return f"{self.metric}_val" if self.val_split else self.metric

    def describe(self) -> dict[str, Any]:
        """metrics.json's `monitor` entry."""
        return {
            "kind": self.kind,
            "data": None if self.root is None else str(self.root),
            "samples_pc": None if self.root is None else self.samples_pc,
            "selected_on": self.selected_on,
        }

    def line(self) -> str:
        """The one line said at start."""
        if self.root is None:
            return "monitor: label-free signals only (no labelled splits; --monitor-data ROOT)"
        return (
            f"monitor: {self.kind} on {self.root} ({self.samples_pc} per class, scored on "
            f"test, best chosen on {self.selected_on})"
        )


def _other_form(where: Path) -> bool:
    """A manifest, or a folder of class folders (`data.labelled_data`'s other forms)."""
    if where.is_file() or not where.is_dir():
        return where.is_file()
    return detect_form(where) == "tree" and any(p.is_dir() for p in where.iterdir())


def plan_monitor(s: PretrainSettings, data_path: Path) -> MonitorPlan:
    """Resolve `--monitor auto` (knn when the monitor data has labelled splits, else none)
    and `--monitor-data` (default: the dataset root). UsageError for knn/linear without
    labelled splits."""
    where = data_path if s.monitor_data is None else resolve_dataset(s.monitor_data)
    root: Any = find_labelled_root(where)
    if root is None and s.monitor_data is not None and _other_form(where):
        root = open_labelled(where, option="--monitor-data")  # a tree or a manifest
    kind = s.monitor if s.monitor != "auto" else ("knn" if root is not None else "none")
    if kind != "none" and root is None:
        option = "--monitor-data" if s.monitor_data is not None else "--monitor"
        value = s.monitor_data if s.monitor_data is not None else kind
        raise UsageError(
            option,
            value,
            f"labelled splits (train/ or train-N/, and test/) in {where}; give "
            "--monitor-data ROOT or --monitor none",
        )
    if root is not None and s.monitor == "auto":
        try:  # auto falls back to label-free when the labels do not fit the option
            resolve_training_labels(root, s.monitor_samples_pc, seed=s.seed)
        except (UsageError, TempoError):
            root, kind = None, "none"
    elif root is not None and kind != "none":
        try:  # an explicit knn/linear: say now, before training, if the labels do not fit
            resolve_training_labels(root, s.monitor_samples_pc, seed=s.seed)
        except UsageError as e:  # it names --samples-pc: the option here is ours
            raise UsageError("--monitor-samples-pc", s.monitor_samples_pc, e.allowed) from None
    if root is None:
        return MonitorPlan("none", None, s.monitor_samples_pc, "rankme")
    selected = "val" if selection_split(root) else TEST_SPLIT
    return MonitorPlan(kind, root, s.monitor_samples_pc, selected)


class Monitor:
    """Measures one twin model (rank 0 only); see the module docstring."""

    def __init__(
        self,
        plan: MonitorPlan,
        s: PretrainSettings,
        twin: TwinModel,
        store: FrameStore,
        device: torch.device,
    ) -> None:
        self.plan, self.twin, self.device = plan, twin, device
        self.loss_std, self.seed = s.loss_std, s.seed
        anchors, partners = PairSampler.of(s, store).epoch(0)  # all pairs: rank 0 of 1
        g = torch.Generator().manual_seed(s.seed + _PAIR_STREAM)  # never the global RNG
        pick = torch.randperm(len(anchors), generator=g)[: s.monitor_pairs]
        # uint8 (P, 3, S, S) each: the anchors' and partners' frames, fixed for the run
        self.x_a, self.x_b = store.frames[anchors[pick]], store.frames[partners[pick]]
        self.source: FeatureSource | None = None
        if plan.root is not None:
            self.labels = resolve_training_labels(plan.root, plan.samples_pc, seed=s.seed)
            recipe = FeatureRecipe(s.image_size, "running", s.seed)
            self.source = FeatureSource(None, lambda: twin.backbone, plan.root, recipe, device)

    def measure(self) -> tuple[dict[str, float], list[str]]:
        """The monitor record of the current weights (accuracies and label-free signals)
        and the collapse warnings (empty when none)."""
        start = time.perf_counter()
        record: dict[str, float] = {}
        if self.plan.kind == "knn":
            record.update(self._knn())
        elif self.plan.kind == "linear":
            record.update(self._linear())
        warnings = self._label_free(record)
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record, warnings

    def score(self, record: dict[str, Any]) -> float:
        """The number the best epoch is chosen by (higher is better)."""
        return float(record[self.plan.selection_key])

    def _knn(self) -> dict[str, float]:
        from tempo_cli.evaluate.knn import knn_result

        assert self.source is not None
        k = EvalKnnSettings.model_fields["k"].default
        temperature = EvalKnnSettings.model_fields["temperature"].default
        self.source.refresh()  # the weights changed since the last measurement
        splits = feature_splits(self.source, self.labels.split, self.plan.val_split)
        train = splits.train.take(self.labels.for_run(0))
        out = {}
        for fs, key in zip(splits.scored(), ("knn", "knn_val"), strict=False):
            res = knn_result(
                train, fs, checkpoint="monitor", samples_pc=self.plan.samples_pc, k=k,
                temperature=temperature,
            )  # fmt: skip
            out[key] = float(res.accuracy[0, 0])
        return out

    def _linear(self) -> dict[str, float]:
        from tempo_cli.evaluate.config import ProbeConfig
        from tempo_cli.evaluate.linear import linear_curves

        assert self.source is not None
        config = ProbeConfig.default(EvalLinearSettings, seed=self.seed, bn_stats="running")
        config = replace(
            config, runs=LINEAR_RUNS, iterations=LINEAR_ITERATIONS, eval_every=LINEAR_ITERATIONS
        )
        self.source.refresh()
        results = linear_curves(
            self.source, self.labels, config, checkpoint="monitor",
            val_split=self.plan.val_split,
            device=self.device,
        )  # fmt: skip
        rec = next(r for r in results if r.selected).record()
        out = {"linear": float(rec["accuracy_final_mean"])}
        if "val_accuracy_final_mean" in rec:
            out["linear_val"] = float(rec["val_accuracy_final_mean"])
        return out

    @torch.no_grad()
    def _label_free(self, record: dict[str, float]) -> list[str]:
        """RankMe, std and Barlow Twins terms on the fixed pairs, in eval mode on copies."""
        n = len(self.x_a)
        pairs = torch.cat([self.x_a, self.x_b])  # (2P, 3, S, S) uint8
        # eval mode: the batch size changes nothing but the speed (large batches: faster)
        h = extract_features(self.twin.backbone, pairs, PAIR_BATCH, device=self.device)
        head = copy.deepcopy(self.twin.head).eval()  # its BatchNorm: running statistics
        p = head(h.to(self.device, next(head.parameters()).dtype)).float().cpu()
        warnings = []
        for name, feats in (("backbone", h[:n]), ("projector", p[:n])):
            rank, std = rankme(feats), feature_std(feats)
            suffix = "" if name == "backbone" else "_projector"
            record[f"rankme{suffix}"], record[f"std{suffix}"] = rank, std
            warning = collapse_warning(rank, std, feats.shape[0], feats.shape[1], name)
            if warning:
                warnings.append(warning)
        record["bt_on_diag"], record["bt_off_diag"] = barlow_terms(p[:n], p[n:], self.loss_std)
        return warnings


@dataclass
class BestSoFar:
    """The best epoch so far (`--keep best`): 1-based `epoch`, its `score`."""

    epoch: int = 0
    score: float = float("-inf")

    def update(self, epoch: int, score: float) -> bool:
        """True when `score` beats the best so far (ties keep the earlier epoch)."""
        if score > self.score:
            self.epoch, self.score = epoch, score
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BestSoFar:
        if not d:
            return cls()
        return cls(int(d["epoch"]), float(d["score"]))


@dataclass(frozen=True)
class MonitorSetup:
    """What monitoring starts from: the run's (final) settings, its data root and frames,
    the model watched, where it runs; on resume, last.pt's best epoch so far and the
    `--monitor-every` records."""

    settings: PretrainSettings
    data_path: Path
    store: FrameStore
    twin: TwinModel
    device: torch.device
    dinfo: DistInfo
    quiet: bool
    saved_best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class MonitorHooks:
    """The training loop's side of monitoring (every rank calls it at the same points):
    rank 0 measures on its own replica, logs `monitor/<key>` to TensorBoard and keeps the
    best epoch; the other ranks wait at a barrier."""

    def __init__(
        self,
        plan: MonitorPlan,
        monitor: Monitor | None,
        dinfo: DistInfo,
        writer: SummaryWriter | None,
        best: BestSoFar,
    ) -> None:
        self.plan, self.monitor, self.dinfo, self.writer = plan, monitor, dinfo, writer
        self.best = best
        self.last_accuracy: float | None = None

    @classmethod
    def start(cls, setup: MonitorSetup, rundir: RunDir) -> MonitorHooks:
        """The monitor plan (said in one line), rank 0's Monitor and the best so far
        (`setup.saved_best`: last.pt's, on resume); metrics.json gets the plan and, on
        resume, the `--monitor-every` history and the best so far back."""
        s, dinfo = setup.settings, setup.dinfo
        plan = plan_monitor(s, setup.data_path)
        log(plan.line(), setup.quiet)
        rundir.update_metrics(monitor=plan.describe())
        monitor = Monitor(plan, s, setup.twin, setup.store, setup.device) if dinfo.is_main else None
        best = BestSoFar.from_dict(setup.saved_best)
        hooks = cls(plan, monitor, dinfo, rundir.tensorboard(), best)
        if setup.history:
            rundir.update_metrics(monitor_steps=setup.history)
        if hooks.best.epoch > 0 and s.keep == "best":
            rundir.update_metrics(best=hooks.best_record(rundir.path / "best.pt"))
        return hooks

    def measure(self, step: int) -> dict[str, float] | None:
        """Rank 0: the record of the current weights (None on the other ranks)."""
        record = None
        if self.monitor is not None:
            record, warnings = self.monitor.measure()
            for w in warnings:
                log(w)  # shown even with --quiet: the run is likely wasted
            if self.writer is not None:
                for key, value in record.items():
                    self.writer.add_scalar(f"monitor/{key}", value, step)
            if self.plan.metric is not None:
                self.last_accuracy = record[self.plan.metric]
        self.dinfo.barrier()
        return record

    def epoch_end(self, epoch: int, step: int) -> tuple[dict[str, float] | None, bool]:
        """(the record of finished epoch `epoch` (1-based), whether it is the best so far)."""
        record = self.measure(step)
        if record is None or self.monitor is None:
            return record, False
        return record, self.best.update(epoch, self.monitor.score(record))

    def best_record(self, path: Path) -> dict[str, Any]:
        """metrics.json's `best` entry."""
        return {
            **self.best.to_dict(),
            "metric": self.plan.selection_key,
            "selected_on": self.plan.selected_on,
            "checkpoint": str(path),
        }

    def shown(self) -> dict[str, float]:
        """Progress-bar fields: the last accuracy measured, if any."""
        if self.last_accuracy is None or self.plan.metric is None:
            return {}
        return {self.plan.metric: self.last_accuracy}
