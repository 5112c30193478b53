"""The monitor's plan: what `--monitor` watches (`plan_monitor`), sized to
`--monitor-budget` (`sized_plan`, with pretrain.monitor_budget)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.labelled_data import detect_form, open_labelled
from tempo_cli.data.sequences import FrameStore
from tempo_cli.errors import TempoError, UsageError
from tempo_cli.evaluate.features import TEST_SPLIT
from tempo_cli.evaluate.train_labels import resolve_training_labels, selection_split
from tempo_cli.pretrain.batches import PairSampler
from tempo_cli.pretrain.final import find_labelled_root
from tempo_cli.pretrain.monitor_budget import MonitorSize, fraction, interval_words, size_monitor
from tempo_cli.settings.pretrain import PretrainSettings


@dataclass(frozen=True)
class MonitorPlan:
    """What is monitored: `kind` (knn|linear|none), on `root` (None for none), choosing the
    best on `selected_on` (val, test, or rankme without labels)."""

    kind: str
    root: Path | None
    samples_pc: int
    selected_on: str
    dropped: str | None = None

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
        if self.dropped is not None:
            return f"monitor: label-free signals only ({self.dropped}: over the budget)"
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


def _labelled_images(plan: MonitorPlan, seed: int) -> int:
    """The images one kNN/linear pass extracts features of (0 without labels)."""
    if plan.root is None:
        return 0
    from tempo_cli.data.labelled import list_split

    labels = resolve_training_labels(plan.root, plan.samples_pc, seed=seed)
    splits = (labels.split, TEST_SPLIT) + ((plan.val_split,) if plan.val_split else ())
    return sum(len(list_split(plan.root, split).paths) for split in splits)


def sized_plan(
    s: PretrainSettings, data_path: Path, store: FrameStore, world_size: int = 1
) -> tuple[MonitorPlan, MonitorSize]:
    """`plan_monitor`, sized to `--monitor-budget` (pretrain.monitor_budget): the plan loses
    its labelled accuracy when `--monitor auto`'s pass does not fit."""
    plan = plan_monitor(s, data_path)
    insist = (
        s.monitor in ("knn", "linear")
        or s.keep == "best"
        or s.monitor_pairs is not None
        or s.monitor_every is not None
    )
    size = size_monitor(
        pairs_per_epoch=len(PairSampler.of(s, store).epoch(0)[0]),
        epochs=s.epochs,
        labelled_images=0 if plan.kind == "none" else _labelled_images(plan, s.seed),
        budget=s.monitor_budget,
        world_size=world_size,
        pairs=s.monitor_pairs,
        insist=insist,
    )
    if plan.kind != "none" and not size.labelled:
        plan = MonitorPlan("none", None, s.monitor_samples_pc, "rankme", dropped=plan.kind)
    return plan, size


def size_line(size: MonitorSize, s: PretrainSettings) -> str:
    """The second half of the plan's line: what the budget allows."""
    if size.every == 0:
        return f"no pass fits --monitor-budget {s.monitor_budget:g} (off)"
    return (
        f"{size.pairs} label-free pairs, {interval_words(size, s.epochs)}, about "
        f"{fraction(size.share)} of the training (--monitor-budget {s.monitor_budget:g})"
    )
