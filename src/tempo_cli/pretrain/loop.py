"""The Tempo training loop: Barlow Twins on pairs of temporally close frames.

`run(settings)` is the core of `tempo pretrain` (a notebook can call it too):
pretrain.prepare reads what the run starts from and resolves its settings once; then
frames -> FrameStore (uint8, decoded once), per epoch the pairs of a `PairSampler`,
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

from tempo_cli.data.sequences import FrameStore, load_frame_store
from tempo_cli.errors import Interrupted, TempoError
from tempo_cli.models.projection_head import ProjectionHead
from tempo_cli.pretrain import distributed
from tempo_cli.pretrain.batches import PairBatches, PairSampler, num_batches, split_batches
from tempo_cli.pretrain.final import FinalModel, final_model_path
from tempo_cli.pretrain.monitor import MonitorHooks, MonitorSetup
from tempo_cli.pretrain.prepare import Prepared, StartWeights, prepare
from tempo_cli.pretrain.state import KIND, Position, restore_training
from tempo_cli.pretrain.step import TwinModel, TwinStep
from tempo_cli.report.progress import log
from tempo_cli.settings.pretrain import PretrainSettings
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
        prep = prepare(settings, dinfo)
        pos = Position()
        try:
            if not prep.settings.baseline:
                pos = _Trainer(prep, dinfo, device).fit()
            final = _finish(prep, pos, dinfo, device)
        finally:
            prep.rundir.close()
        start, rundir = prep.start, prep.rundir
        return PretrainResult(
            rundir.metrics, start.arch, start.backbone, start.head, rundir.path, final, dinfo.rank
        )
    finally:
        dinfo.close()


def final_model(s: PretrainSettings, start: StartWeights, pos: Position) -> FinalModel:
    """The weights trained so far (they are `start`'s modules) with the run's meta."""
    meta = {"settings": s.to_json_dict(), "epoch": pos.epoch, "step": pos.step}
    meta["epochs"] = pos.epochs
    return FinalModel(start.arch, start.backbone, start.head, s.image_size, meta)


def _finish(
    prep: Prepared, pos: Position, dinfo: distributed.DistInfo, device: torch.device
) -> Path | None:
    """Save the final model; `--eval`: linear evaluation, then save it with its head."""
    if not dinfo.is_main:
        return None
    s, rundir = prep.settings, prep.rundir
    path = final_model_path(s.save_model, rundir.path)
    model = final_model(s, prep.start, pos)
    model.save(path)
    if not rundir.metrics.get("epochs"):
        rundir.update_metrics(epochs=pos.epochs)
    rundir.update_metrics(checkpoint=str(path), steps=pos.step)
    log(f"model saved: {path}", prep.quiet)
    if prep.eval_root is not None:
        record = model.evaluate_and_save(path, prep.eval_root, s, device, prep.quiet)
        rundir.update_metrics(linear_eval=record)
    return path


def _load_frames(
    data_path: Path, image_size: int, dinfo: distributed.DistInfo, quiet: bool
) -> FrameStore:
    """The frames at `image_size`: rank 0 decodes (and caches) first, the others then read
    the cache."""
    store = None
    if dinfo.is_main:
        store = load_frame_store(data_path, image_size, quiet=quiet)
    dinfo.barrier()
    if store is None:
        store = load_frame_store(data_path, image_size, quiet=True)
    return store


def _epoch_record(pos: Position, pps: float) -> dict[str, Any]:
    """metrics.json's record of the epoch in progress (its mean step loss so far)."""
    return {
        "epoch": pos.epoch + 1,
        "loss": pos.epoch_loss_sum / max(pos.epoch_steps, 1),
        "pairs_per_s": pps,
        "steps": pos.epoch_steps,
    }


class _Trainer:
    """One pre-training run's training (one process of a distributed job): built from the
    prepared run (final settings, starting weights, run folder), then `fit`."""

    def __init__(self, prep: Prepared, dinfo: distributed.DistInfo, device: torch.device) -> None:
        s = self.settings = prep.settings
        self.dinfo, self.device, self.quiet, self.rundir = dinfo, device, prep.quiet, prep.rundir
        self.start = prep.start
        self.per_rank = s.batch_size // dinfo.world_size
        self.last_path = prep.rundir.path / "last.pt"
        self.store = _load_frames(prep.data_path, s.image_size, dinfo, self.quiet)
        twin = TwinModel(prep.start.backbone, prep.start.head)
        self.step = TwinStep(twin, s, dinfo, device)
        self.rundir.update_metrics(precision=self.step.precision.name)  # what auto became
        st = prep.resume_state
        self.pos = restore_training(
            st, s, self.step.opt, self.step.scaler, dinfo.world_size, self.quiet
        )
        setup = MonitorSetup(
            s,
            prep.data_path,
            self.store,
            self.step.twin,
            device,
            dinfo,
            self.quiet,
            saved_best=st.payload.get("monitor_best") if st is not None else None,
            history=self.pos.monitor,
        )
        self.hooks = MonitorHooks.start(setup, self.rundir)
        self.sampler = PairSampler.of(s, self.store, dinfo.rank, dinfo.world_size)
        # equal step counts on every rank
        self.n_pairs = dinfo.all_min(len(self.sampler.epoch(0)[0]))
        self.per_epoch = num_batches(self.n_pairs, self.per_rank)
        if self.per_epoch == 0:
            raise TempoError(f"{prep.data_path} has too few frames for one batch; give more frames")
        self.lr = self.step.opt.param_groups[0]["lr"]
        self._last_save = time.monotonic()

    def fit(self) -> Position:
        """per epoch: steps, then the epoch record and last.pt; the final position."""
        s, pos, per_epoch = self.settings, self.pos, self.per_epoch
        remaining = (s.epochs - pos.epoch) * per_epoch - pos.batch
        if s.max_steps is not None:
            remaining = min(remaining, s.max_steps - pos.step)
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
                stop_now, pps = self._train_epoch(stop, steps)
                self._sync_buffers()
                if pos.batch < per_epoch:  # stopped by --max-steps inside the epoch
                    if stop_now:
                        self._save_last()
                        raise self._interrupted(stop)
                    self._end_partial(pps)
                    break
                self._end_epoch(pps)
                if stop_now:
                    raise self._interrupted(stop)
        return pos

    def _train_epoch(self, stop: StopRequest, steps: StepLogger) -> tuple[bool, float]:
        """The rest of epoch `pos.epoch` (or up to --max-steps) -> (stop asked, pairs/s)."""
        s, dinfo, pos, n_pairs = self.settings, self.dinfo, self.pos, self.n_pairs
        anchors, partners = self.sampler.epoch(pos.epoch)
        batches = split_batches(
            anchors[:n_pairs], partners[:n_pairs], self.per_rank, start=pos.batch
        )
        if s.max_steps is not None:
            batches = batches[: s.max_steps - pos.step]
        pin = self.device.type == "cuda"
        feeder = PairBatches(self.store.frames, batches, s.workers, pin=pin)
        pairs_done, t0 = 0, time.perf_counter()
        try:
            for xa_u8, xb_u8 in feeder:
                loss = self.step(xa_u8, xb_u8, pos.epoch, pos.batch)
                pos.step += 1
                pos.batch += 1
                pairs_done += len(xa_u8) * dinfo.world_size
                if steps.add(pos.step, loss, lr=self.lr) and self._flush(steps, stop):
                    # Mid-epoch, rank 0's own BatchNorm buffers go into last.pt, not the
                    # ranks' average: DDP starts every step from rank 0's, so the resumed
                    # run goes on exactly as the uninterrupted one would.
                    self._save_last()
                    raise self._interrupted(stop)
                if not steps.pending:
                    self._maybe_save_periodic()
                every = s.monitor_every
                if every and pos.step % every == 0 and pos.batch < self.per_epoch:
                    self._monitor_step()
                rate = pairs_done / max(time.perf_counter() - t0, 1e-9)
                shown = self.hooks.shown()
                steps.advance(epoch=f"{pos.epoch + 1}/{s.epochs}", pairs_s=rate, **shown)
            stop_now = self._flush(steps, stop)
        finally:
            feeder.close()
        elapsed = time.perf_counter() - t0
        return stop_now, pairs_done / elapsed if elapsed > 0 else 0.0

    def _end_epoch(self, pps: float) -> None:
        """Record the finished epoch, move the position to the next one, save last.pt."""
        pos = self.pos
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
            self._save_best()
        self._save_last()

    # --- monitoring ------------------------------------------------------------------

    def _monitor_step(self) -> None:
        """`--monitor-every`: measure inside the epoch (all ranks call this)."""
        pos = self.pos
        record = self.hooks.measure(pos.step)
        if record is not None:
            pos.monitor.append({"step": pos.step, "epoch": pos.epoch + 1, **record})
            self.rundir.update_metrics(monitor_steps=pos.monitor)

    def _save_best(self) -> None:
        """`--keep best`: the weights of the epoch just finished as runs/<name>/best.pt."""
        if not self.dinfo.is_main:
            return
        path = self.rundir.path / "best.pt"
        final_model(self.settings, self.start, self.pos).save(path)
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

    def _interrupted(self, stop: StopRequest) -> Interrupted:
        pos = self.pos
        self.rundir.update_metrics(epochs=pos.epochs, last=str(self.last_path), interrupted=True)
        return Interrupted(
            f"{stop.signal_name or 'stop'} received at step {pos.step} (epoch {pos.epoch + 1}); "
            f"resumable checkpoint saved: continue with `tempo pretrain --resume {self.last_path}`"
        )

    def _flush(self, steps: StepLogger, stop: StopRequest) -> bool:
        """Record the pending losses; True when any rank asked to stop (all ranks call this)."""
        rows = steps.read()
        bad = not all(r.finite for r in rows)
        stop_now, bad = self.dinfo.any_flags(stop.requested, bad)
        if bad:
            raise self._nonfinite(self.pos.step)
        steps.write(rows)
        pos = self.pos
        for r in rows:
            pos.epoch_loss_sum += r.loss
            pos.epoch_steps += 1
        return stop_now

    def _maybe_save_periodic(self) -> None:
        """last.pt every --checkpoint-minutes (rank 0; needs no other rank)."""
        if time.monotonic() - self._last_save >= self.settings.checkpoint_minutes * 60:
            self._save_last()

    def _save_last(self) -> None:
        """Write last.pt atomically (rank 0) unless the weights went non-finite."""
        pos = self.pos
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
        save_state(
            self.last_path, state, product=final_model(self.settings, self.start, pos).product()
        )

    def _end_partial(self, pps: float) -> None:
        """--max-steps stopped inside an epoch: save a resumable state, report the part."""
        pos = self.pos
        self._save_last()
        part = {**_epoch_record(pos, pps), "partial": True}
        self.rundir.update_metrics(epochs=[*pos.epochs, part], last=str(self.last_path))
        log(
            f"stopped at --max-steps {self.settings.max_steps} in epoch {pos.epoch + 1}", self.quiet
        )
