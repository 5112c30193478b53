"""The Tempo training loop: Barlow Twins on pairs of temporally close frames.

`run(settings)` is the core of `tempo pretrain` (a notebook can call it too):
frames -> FrameStore (uint8, decoded once), per epoch the pairs of data.pairs.epoch_pairs,
per step two uint8 gathers (augmented with `--augment`) normalised in batch on the device,
backbone + projection head on each frame of the pair, Barlow Twins loss over the (global)
batch, SGD or AdamW.

Monitoring (pretrain.monitor): at each epoch end (and every `--monitor-every` steps) rank 0
scores its replica (kNN or linear accuracy, label-free signals) while the others wait;
`--keep best` also writes best.pt.

Outputs (rank 0 only): runs/<name>/config.json, metrics.json, TensorBoard scalars
`loss` (per step), `lr` and `monitor/*`, last.pt (resumable; at each epoch end, every
`--checkpoint-minutes`, on SIGINT/SIGTERM and at `--max-steps`) and the final model
(`--save-model`, else runs/<name>/model.pt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import places
from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.pairs import epoch_pairs
from tempo_cli.data.sequences import FrameStore, load_frame_store
from tempo_cli.errors import Interrupted, TempoError, UsageError
from tempo_cli.models.backbones import FEATURE_DIM, build_resnet
from tempo_cli.models.checkpoint import load_model
from tempo_cli.models.projection_head import ProjectionHead, head_for
from tempo_cli.pretrain import distributed
from tempo_cli.pretrain.batches import PairBatches, num_batches, split_batches
from tempo_cli.pretrain.final import FinalModel, final_model_path, labelled_root
from tempo_cli.pretrain.monitor import MonitorHooks
from tempo_cli.pretrain.state import (
    KIND,
    Position,
    load_resume,
    restore_training,
    resumed_settings,
)
from tempo_cli.pretrain.step import TwinModel, TwinStep
from tempo_cli.report.progress import log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import seed_everything
from tempo_cli.settings.pretrain import PretrainSettings
from tempo_cli.training.resume import settings_with
from tempo_cli.training.state import TrainingState, save_state
from tempo_cli.training.step_log import (
    StepLogger,
    finite_weights,
    nonfinite_error,
    readback_every,
)
from tempo_cli.training.stop import StopRequest


@dataclass
class PretrainResult:
    """What `train` returns: the metrics and the trained modules (on their device)."""

    metrics: dict[str, Any]
    arch: str
    backbone: nn.Module
    head: ProjectionHead
    run_dir: Path
    checkpoint: Path | None
    rank: int = 0


def run(settings: PretrainSettings) -> dict[str, Any]:
    """Pre-train as `settings` say; returns the metrics (also in runs/<name>/metrics.json).

    Raises UsageError (bad options), TempoError (run-time failure, e.g. a non-finite loss;
    the last good last.pt stays) and Interrupted (SIGINT/SIGTERM; last.pt was saved).
    """
    return train(settings).metrics


def train(settings: PretrainSettings) -> PretrainResult:
    """`run`, returning the trained modules as well (for tests and notebooks)."""
    dinfo, device = distributed.setup(settings.device)
    try:
        return _Trainer(settings, dinfo, device).fit()
    finally:
        dinfo.close()


def _epoch_record(pos: Position, pps: float) -> dict[str, Any]:
    """metrics.json's record of the epoch in progress (its mean step loss so far)."""
    return {
        "epoch": pos.epoch + 1,
        "loss": pos.epoch_loss_sum / max(pos.epoch_steps, 1),
        "pairs_per_s": pps,
        "steps": pos.epoch_steps,
    }


class _Trainer:
    """One pre-training run (one process of a distributed job)."""

    def __init__(
        self, settings: PretrainSettings, dinfo: distributed.DistInfo, device: torch.device
    ) -> None:
        self.dinfo = dinfo
        self.device = device
        self.quiet = settings.quiet or not dinfo.is_main
        self.resume_state: TrainingState | None = None
        self.resumed = None
        if settings.resume is not None:
            path = Path(settings.resume).expanduser()
            self.resume_state = load_resume(path)
            self.resumed = load_model(path)
            settings = resumed_settings(settings, self.resume_state)
        self.settings = settings
        w = dinfo.world_size
        if settings.batch_size % w or settings.batch_size // w < 2:
            raise UsageError(
                "--batch-size",
                settings.batch_size,
                f"a multiple of the number of processes ({w}) with >= 2 pairs per process",
            )
        self.per_rank = settings.batch_size // w

    # --- setup -----------------------------------------------------------------------

    def _run_dir(self) -> RunDir:
        s = self.settings
        root = None
        if self.resume_state is not None and "name" not in s.model_fields_set:
            root = Path(self.resume_state.payload["run_dir"])
        rundir = RunDir(s, root=root, enabled=self.dinfo.is_main)
        if s.name != rundir.path.name:
            self.settings = settings_with(s, name=rundir.path.name)
        return rundir

    def _build_model(self) -> tuple[str, nn.Module, ProjectionHead, int | None]:
        """(arch, backbone, head, the input size the starting weights record or None)."""
        s = self.settings
        if self.resumed is not None:
            if self.resumed.head is None:
                raise TempoError(f"{s.resume} holds no projection head; cannot resume it")
            r = self.resumed
            return r.arch, r.backbone, r.head, r.image_size
        if places.is_named_baseline(s.init):
            return s.backbone, build_resnet(s.backbone, s.init), head_for(s.backbone), None
        loaded = load_model(s.init, arch=s.backbone)
        if loaded.arch != s.backbone:
            log(f"--init {s.init} is a {loaded.arch}; training {loaded.arch}", self.quiet)
        head = loaded.head
        if head is None or head.in_dim != FEATURE_DIM[loaded.arch]:
            head = head_for(loaded.arch)
        return loaded.arch, loaded.backbone, head, loaded.image_size

    def _settle(self, arch: str, recorded: int | None) -> PretrainSettings:
        """The settings as trained: the starting weights' arch, a number for `--image-size
        auto` (the size they record, else the default); warns on an explicit other size."""
        s = self.settings
        what = f"--init {s.init}" if self.resumed is None else str(s.resume)
        warning = s.image_size_warning(recorded, what)
        if warning:
            log(f"warning: {warning}", not self.dinfo.is_main)
        self.settings = settings_with(s, backbone=arch, image_size=s.resolved_image_size(recorded))
        return self.settings

    def _load_frames(self, data_path: Path) -> FrameStore:
        # Rank 0 decodes (and caches) first; the others then read the cache.
        store = None
        if self.dinfo.is_main:
            store = load_frame_store(data_path, self.settings.image_size, quiet=self.quiet)
        self.dinfo.barrier()
        if store is None:
            store = load_frame_store(data_path, self.settings.image_size, quiet=True)
        return store

    # --- the run ---------------------------------------------------------------------

    def fit(self) -> PretrainResult:
        s = self.settings
        data_path = resolve_dataset(s.data) if self.dinfo.is_main else None
        self.dinfo.barrier()  # `demo` is generated by rank 0 only
        if data_path is None:
            data_path = resolve_dataset(s.data)
        eval_root = labelled_root(data_path) if s.eval else None
        rundir = self._run_dir()
        s = self.settings
        seed_everything(s.seed)
        arch, backbone, head, recorded = self._build_model()
        s = self._settle(arch, recorded)
        rundir.save_config(s)
        self.arch, self.backbone, self.head, self.rundir = arch, backbone, head, rundir
        self.last_path = rundir.path / "last.pt"
        pos = Position()
        try:
            if not s.baseline:
                pos = self._train_loop(data_path)
            final = self._finish(pos, eval_root)
        finally:
            rundir.close()
        return PretrainResult(
            rundir.metrics, arch, backbone, head, rundir.path, final, self.dinfo.rank
        )

    def _train_loop(self, data_path: Path) -> Position:
        """build -> restore -> per epoch: steps, then epoch record and last.pt."""
        s = self.settings
        store = self._load_frames(data_path)
        self.step = TwinStep(TwinModel(self.backbone, self.head), s, self.dinfo, self.device)
        self.rundir.update_metrics(precision=self.step.precision.name)  # what auto became
        pos = restore_training(
            self.resume_state, s, self.step.opt, self.step.scaler, self.dinfo.world_size, self.quiet
        )
        st = self.resume_state
        self.hooks = MonitorHooks.start(
            s,
            data_path,
            store,
            self.step.twin,
            self.device,
            self.dinfo,
            self.rundir,
            st.payload.get("monitor_best") if st is not None else None,
            pos.monitor,
            self.quiet,
        )
        param = s.proximity_param()
        first, _ = epoch_pairs(
            store, s.pdf, param, s.seed, 0, self.dinfo.rank, self.dinfo.world_size, s.pairs
        )
        n_pairs = self.dinfo.all_min(len(first))  # equal step counts on every rank
        per_epoch = self.per_epoch = num_batches(n_pairs, self.per_rank)
        if per_epoch == 0:
            raise TempoError(f"{data_path} has too few frames for one batch; give more frames")
        remaining = (s.epochs - pos.epoch) * per_epoch - pos.batch
        if s.max_steps is not None:
            remaining = min(remaining, s.max_steps - pos.step)
        self.lr = self.step.opt.param_groups[0]["lr"]
        self._last_save = time.monotonic()
        self.step.model.train()
        steps = StepLogger(
            self.rundir.tensorboard(),
            total=max(remaining, 0),
            description="pretrain",
            quiet=self.quiet,
            every=readback_every(self.device),
        )
        with StopRequest() as stop, steps:
            while pos.epoch < s.epochs and (s.max_steps is None or pos.step < s.max_steps):
                stop_now, pps = self._train_epoch(store, pos, n_pairs, stop, steps)
                self._sync_buffers()
                if pos.batch < per_epoch:  # stopped by --max-steps inside the epoch
                    if stop_now:
                        self._save_last(pos)
                        raise self._interrupted(stop, pos)
                    self._end_partial(pos, pps)
                    break
                self._end_epoch(pos, pps)
                if stop_now:
                    raise self._interrupted(stop, pos)
        return pos

    def _train_epoch(
        self, store: FrameStore, pos: Position, n_pairs: int, stop: StopRequest, steps: StepLogger
    ) -> tuple[bool, float]:
        """The rest of epoch `pos.epoch` (or up to --max-steps) -> (stop asked, pairs/s)."""
        s, dinfo = self.settings, self.dinfo
        anchors, partners = epoch_pairs(
            store,
            s.pdf,
            s.proximity_param(),
            s.seed,
            pos.epoch,
            dinfo.rank,
            dinfo.world_size,
            s.pairs,
        )
        batches = split_batches(
            anchors[:n_pairs], partners[:n_pairs], self.per_rank, start=pos.batch
        )
        if s.max_steps is not None:
            batches = batches[: s.max_steps - pos.step]
        feeder = PairBatches(store.frames, batches, s.workers, pin=self.device.type == "cuda")
        pairs_done, t0 = 0, time.perf_counter()
        try:
            for xa_u8, xb_u8 in feeder:
                loss = self.step(xa_u8, xb_u8, pos.epoch, pos.batch)
                pos.step += 1
                pos.batch += 1
                pairs_done += len(xa_u8) * dinfo.world_size
                if steps.add(pos.step, loss, lr=self.lr) and self._flush(steps, pos, stop):
                    self._sync_buffers()
                    self._save_last(pos)
                    raise self._interrupted(stop, pos)
                if not steps.pending:
                    self._maybe_save_periodic(pos)
                every = s.monitor_every
                if every and pos.step % every == 0 and pos.batch < self.per_epoch:
                    self._monitor_step(pos)
                rate = pairs_done / max(time.perf_counter() - t0, 1e-9)
                shown = self.hooks.shown()
                steps.advance(epoch=f"{pos.epoch + 1}/{s.epochs}", pairs_s=rate, **shown)
            stop_now = self._flush(steps, pos, stop)
        finally:
            feeder.close()
        elapsed = time.perf_counter() - t0
        return stop_now, pairs_done / elapsed if elapsed > 0 else 0.0

    def _end_epoch(self, pos: Position, pps: float) -> None:
        """Record the finished epoch, move the position to the next one, save last.pt."""
        record = _epoch_record(pos, pps)
        monitored, improved = self.hooks.epoch_end(pos.epoch + 1, pos.step)
        if monitored is not None:
            record["monitor"] = monitored
        pos.epochs.append(record)
        pos.epoch, pos.batch, pos.epoch_loss_sum, pos.epoch_steps = pos.epoch + 1, 0, 0.0, 0
        self.rundir.update_metrics(epochs=pos.epochs, last=str(self.last_path))
        shown = "".join(f", {k} {v:.3f}" for k, v in self.hooks.shown().items())
        log(
            f"epoch {record['epoch']}/{self.settings.epochs}: loss {record['loss']:.4f}, "
            f"{pps:.1f} pairs/s{shown}",
            self.quiet,
        )
        if improved and self.settings.keep == "best":
            self._save_best(pos)
        self._save_last(pos)

    # --- monitoring ------------------------------------------------------------------

    def _monitor_step(self, pos: Position) -> None:
        """`--monitor-every`: measure inside the epoch (all ranks call this)."""
        record = self.hooks.measure(pos.step)
        if record is not None:
            pos.monitor.append({"step": pos.step, "epoch": pos.epoch + 1, **record})
            self.rundir.update_metrics(monitor_steps=pos.monitor)

    def _save_best(self, pos: Position) -> None:
        """`--keep best`: the weights of the epoch just finished as runs/<name>/best.pt."""
        if not self.dinfo.is_main:
            return
        path = self.rundir.path / "best.pt"
        s = self.settings
        FinalModel(self.arch, self.backbone, self.head, s.image_size, self._meta(pos)).save(path)
        self.rundir.update_metrics(best=self.hooks.best_record(path))

    # --- checkpoints -----------------------------------------------------------------

    def _sync_buffers(self) -> None:
        self.dinfo.average_buffers(self.step.twin)

    def _nonfinite(self, step: int) -> TempoError:
        where = (
            f"the last good checkpoint is {self.last_path}"
            if self.last_path.is_file()
            else "no checkpoint was saved yet"
        )
        return nonfinite_error(step, f"{where}; lower --lr (or raise --batch-size) and try again")

    def _interrupted(self, stop: StopRequest, pos: Position) -> Interrupted:
        self.rundir.update_metrics(epochs=pos.epochs, last=str(self.last_path), interrupted=True)
        return Interrupted(
            f"{stop.signal_name or 'stop'} received at step {pos.step} (epoch {pos.epoch + 1}); "
            f"resumable checkpoint saved: continue with `tempo pretrain --resume {self.last_path}`"
        )

    def _flush(self, steps: StepLogger, pos: Position, stop: StopRequest) -> bool:
        """Record the pending losses; True when any rank asked to stop (all ranks call this)."""
        rows = steps.read()
        bad = not all(r.finite for r in rows)
        stop_now, bad = self.dinfo.any_flags(stop.requested, bad)
        if bad:
            raise self._nonfinite(pos.step)
        steps.write(rows)
        for r in rows:
            pos.epoch_loss_sum += r.loss
            pos.epoch_steps += 1
        return stop_now

    def _maybe_save_periodic(self, pos: Position) -> None:
        """last.pt every --checkpoint-minutes (rank 0; needs no other rank)."""
        if time.monotonic() - self._last_save >= self.settings.checkpoint_minutes * 60:
            self._save_last(pos)

    def _save_last(self, pos: Position) -> None:
        """Write last.pt atomically (rank 0) unless the weights went non-finite."""
        self._last_save = time.monotonic()
        if not self.dinfo.is_main:
            return
        if not finite_weights(self.step.twin):
            raise self._nonfinite(pos.step)
        state = TrainingState.capture(
            KIND,
            settings=self.settings,
            position=pos.to_dict(),
            optimizer=self.step.opt,
            scaler=self.step.scaler,
            payload={
                "run_dir": str(self.rundir.path),
                "world_size": self.dinfo.world_size,
                "monitor_best": self.hooks.best.to_dict(),
            },
        )
        product = {"arch": self.arch, "backbone": self.backbone, "head": self.head}
        product.update(image_size=self.settings.image_size, meta=self._meta(pos))
        save_state(self.last_path, state, product=product)

    def _end_partial(self, pos: Position, pps: float) -> None:
        """--max-steps stopped inside an epoch: save a resumable state, report the part."""
        self._save_last(pos)
        part = {**_epoch_record(pos, pps), "partial": True}
        self.rundir.update_metrics(epochs=[*pos.epochs, part], last=str(self.last_path))
        log(
            f"stopped at --max-steps {self.settings.max_steps} in epoch {pos.epoch + 1}", self.quiet
        )

    def _meta(self, pos: Position) -> dict[str, Any]:
        return {
            "settings": self.settings.to_json_dict(),
            "epoch": pos.epoch,
            "step": pos.step,
            "epochs": pos.epochs,
        }

    # --- the end ---------------------------------------------------------------------

    def _finish(self, pos: Position, eval_root: Path | None) -> Path | None:
        """Save the final model; `--eval`: linear evaluation, then save it with its head."""
        if not self.dinfo.is_main:
            return None
        s, rundir = self.settings, self.rundir
        path = final_model_path(s.save_model, rundir.path)
        model = FinalModel(self.arch, self.backbone, self.head, s.image_size, self._meta(pos))
        model.save(path)
        if not rundir.metrics.get("epochs"):
            rundir.update_metrics(epochs=pos.epochs)
        rundir.update_metrics(checkpoint=str(path), steps=pos.step)
        log(f"model saved: {path}", self.quiet)
        if eval_root is not None:
            record = model.evaluate_and_save(path, eval_root, s, self.device, self.quiet)
            rundir.update_metrics(linear_eval=record)
        return path
