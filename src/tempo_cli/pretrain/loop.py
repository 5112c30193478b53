"""The Tempo training loop: Barlow Twins on pairs of temporally close frames.

`run(settings)` is the core of `tempo pretrain` (a notebook can call it too):
frames -> FrameStore (uint8, decoded once), per epoch the pairs of data.pairs.epoch_pairs,
per step two uint8 gathers normalised in batch on the device, backbone + projection head
on each frame of the pair, Barlow Twins loss over the (global) batch, SGD or AdamW.

Outputs (rank 0 only): runs/<name>/config.json, metrics.json, TensorBoard scalars
`loss` (per step) and `lr`, last.pt (resumable; at each epoch end, every
`--checkpoint-minutes`, on SIGINT/SIGTERM and at `--max-steps`) and the final model
(`--save-model`, else runs/<name>/model.pt).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tempo_cli import places
from tempo_cli.data.datasets import resolve_dataset
from tempo_cli.data.pairs import epoch_pairs
from tempo_cli.data.sequences import FrameStore, load_frame_store
from tempo_cli.errors import Interrupted, TempoError, UsageError
from tempo_cli.models.backbones import FEATURE_DIM, build_resnet
from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss
from tempo_cli.models.checkpoint import (
    capture_rng_state,
    load_model,
    restore_rng_state,
    save_checkpoint,
)
from tempo_cli.models.projection_head import ProjectionHead, head_for
from tempo_cli.pretrain import distributed
from tempo_cli.pretrain.batches import Normalizer, PairBatches, num_batches, split_batches
from tempo_cli.pretrain.signals import StopRequest
from tempo_cli.pretrain.state import (
    Position,
    check_training_state,
    merge_resumed_settings,
    training_state,
)
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.report.run_dir import RunDir
from tempo_cli.runtime import seed_everything
from tempo_cli.settings.pretrain import PretrainSettings

# Linear evaluation inside pre-training (SPEC.md "Linear evaluation"): 3 runs of
# 3,000 iterations with batches of 10 training features, SGD lr 0.01, full train split.
EVAL_RUNS = 3
EVAL_ITERATIONS = 3000
EVAL_BATCH_SIZE = 10
EVAL_LR = 0.01


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


def final_model_path(save_model: str | None, run_dir: Path) -> Path:
    """`--save-model`: a bare name goes to the model directory, a path is used as given;
    without it the model goes to runs/<name>/model.pt."""
    if save_model is None:
        return run_dir / "model.pt"
    p = Path(save_model).expanduser()
    bare = not p.is_absolute() and len(p.parts) == 1 and not save_model.startswith(".")
    return places.model_dir() / save_model if bare else p


def labelled_root(data_path: Path) -> Path:
    """The dataset root holding train/ and test/ for `--eval` (beside frames/)."""
    candidates = [data_path] + ([data_path.parent] if data_path.name == "frames" else [])
    for root in candidates:
        if (root / "test").is_dir() and any(
            (root / s).is_dir() for s in ("train", "train-1", "train-5")
        ):
            return root
    raise UsageError(
        "--eval",
        str(data_path),
        "needs labelled splits (train/, test/) beside frames/ in --data; or evaluate "
        "the saved model with `tempo eval linear --path MODEL --data ROOT`",
    )


class _LossLog:
    """Step losses kept on the device and read back every `every` steps (one sync each)."""

    def __init__(self, writer: Any, lr: float, every: int) -> None:
        self.writer = writer  # TensorBoard SummaryWriter, None on ranks > 0
        self.lr = lr
        self.every = every
        self.pending: list[torch.Tensor] = []
        self.last = float("nan")  # the latest loss read back, for the progress bar

    def add(self, loss: torch.Tensor) -> bool:
        """Keep one step's loss; True when it is time to read them back."""
        self.pending.append(loss.detach())
        return len(self.pending) >= self.every

    def read(self) -> list[float]:
        values = torch.stack(self.pending).tolist() if self.pending else []
        self.pending.clear()
        return values

    def record(self, values: list[float], pos: Position) -> None:
        """Add finite step losses to the epoch sum and TensorBoard (steps end at pos.step)."""
        first = pos.step - len(values) + 1
        for k, v in enumerate(values):
            pos.epoch_loss_sum += v
            pos.epoch_steps += 1
            if self.writer is not None:
                self.writer.add_scalar("loss", v, first + k)
                self.writer.add_scalar("lr", self.lr, first + k)
        if values:
            self.last = values[-1]


class _Trainer:
    """One pre-training run (one process of a distributed job)."""

    def __init__(
        self, settings: PretrainSettings, dinfo: distributed.DistInfo, device: torch.device
    ) -> None:
        self.dinfo = dinfo
        self.device = device
        self.quiet = settings.quiet or not dinfo.is_main
        self.resume_state: dict[str, Any] | None = None
        self.resumed = None
        if settings.resume is not None:
            path = Path(settings.resume).expanduser()
            self.resumed = load_model(path)
            self.resume_state = check_training_state(self.resumed.training_state, path)
            settings = merge_resumed_settings(settings, self.resume_state["settings"])
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
            root = Path(self.resume_state["run_dir"])
        rundir = RunDir(s, root=root, enabled=self.dinfo.is_main)
        if s.name != rundir.path.name:
            fields = set(s.model_fields_set)
            self.settings = s = s.model_copy(update={"name": rundir.path.name})
            s.__pydantic_fields_set__ = fields
        return rundir

    def _build_model(self) -> tuple[str, nn.Module, ProjectionHead]:
        s = self.settings
        if self.resumed is not None:
            if self.resumed.head is None:
                raise TempoError(f"{s.resume} holds no projection head; cannot resume it")
            return self.resumed.arch, self.resumed.backbone, self.resumed.head
        if s.init in ("imagenet", "random"):
            return s.backbone, build_resnet(s.backbone, s.init), head_for(s.backbone)
        loaded = load_model(s.init, arch=s.backbone)
        if loaded.arch != s.backbone:
            log(f"--init {s.init} is a {loaded.arch}; training {loaded.arch}", self.quiet)
        head = loaded.head
        if head is None or head.in_dim != FEATURE_DIM[loaded.arch]:
            head = head_for(loaded.arch)
        return loaded.arch, loaded.backbone, head

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
        arch, backbone, head = self._build_model()
        if arch != s.backbone:
            fields = set(s.model_fields_set)
            self.settings = s = s.model_copy(update={"backbone": arch})
            s.__pydantic_fields_set__ = fields
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
        s, dinfo, device = self.settings, self.dinfo, self.device
        store = self._load_frames(data_path)
        cuda = device.type == "cuda"
        twin = TwinModel(self.backbone, self.head)
        if cuda and dinfo.distributed:
            # PyTorch's SyncBatchNorm only runs on GPUs; on CPU each rank keeps its own
            # BatchNorm batch statistics (DDP still syncs the running buffers from rank 0).
            twin = nn.SyncBatchNorm.convert_sync_batchnorm(twin)
        twin = twin.to(device)
        if cuda:
            twin = twin.to(memory_format=torch.channels_last)
        params = [p for p in twin.parameters() if p.requires_grad]
        if s.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
            )
        else:
            opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        amp_dtype = None
        if cuda:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        model: nn.Module = twin
        if dinfo.distributed:
            model = DistributedDataParallel(twin, device_ids=[device.index] if cuda else None)
        loss_fn = BarlowTwinsLoss(s.l, gather_distributed=dinfo.distributed)
        normalize = Normalizer(device, channels_last=cuda)

        pos = Position()
        if self.resume_state is not None:
            st = self.resume_state
            if st["settings"].get("optimizer") == s.optimizer:
                opt.load_state_dict(st["optimizer"])
            else:
                log(f"--optimizer changed to {s.optimizer}: its state starts afresh", self.quiet)
            # load_state_dict brings back the saved hyper-parameters; options given now
            # (e.g. a lower --lr to continue) take precedence.
            for group in opt.param_groups:
                group["lr"], group["weight_decay"] = s.lr, s.weight_decay
                if s.optimizer == "sgd":
                    group["momentum"] = s.momentum
            if scaler.is_enabled() and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            restore_rng_state(st["rng"])
            pos = Position.from_dict(st["position"])
            if int(st.get("world_size", 1)) != dinfo.world_size and pos.batch > 0:
                log(
                    "resuming with a different number of processes: the unfinished epoch "
                    f"{pos.epoch + 1} restarts from its beginning",
                    self.quiet,
                )
                pos.batch, pos.epoch_loss_sum, pos.epoch_steps = 0, 0.0, 0

        param = s.proximity_param()
        first_anchors, _ = epoch_pairs(store, s.pdf, param, s.seed, 0, dinfo.rank, dinfo.world_size)
        n_pairs = dinfo.all_min(len(first_anchors))  # equal step counts on every rank
        per_epoch = num_batches(n_pairs, self.per_rank)
        if per_epoch == 0:
            raise TempoError(f"{data_path} has too few frames for one batch; give more frames")
        remaining = (s.epochs - pos.epoch) * per_epoch - pos.batch
        if s.max_steps is not None:
            remaining = min(remaining, s.max_steps - pos.step)
        remaining = max(remaining, 0)

        self.opt, self.scaler, self.twin = opt, scaler, twin
        # Read losses back every step on CPU (free), every 10 steps on a GPU (one sync).
        losses = _LossLog(
            self.rundir.tensorboard(), opt.param_groups[0]["lr"], 1 if device.type == "cpu" else 10
        )
        autocast = (
            torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        )
        self._last_save = time.monotonic()
        model.train()
        with StopRequest() as stop, ProgressBar(remaining, "pretrain", quiet=self.quiet) as bar:
            while pos.epoch < s.epochs and (s.max_steps is None or pos.step < s.max_steps):
                anchors, partners = epoch_pairs(
                    store, s.pdf, param, s.seed, pos.epoch, dinfo.rank, dinfo.world_size
                )
                batches = split_batches(
                    anchors[:n_pairs], partners[:n_pairs], self.per_rank, start=pos.batch
                )
                if s.max_steps is not None:
                    batches = batches[: s.max_steps - pos.step]
                feeder = PairBatches(store.frames, batches, s.workers, pin=cuda)
                pairs_done, t0 = 0, time.perf_counter()
                try:
                    for xa_u8, xb_u8 in feeder:
                        x_a, x_b = normalize(xa_u8), normalize(xb_u8)
                        with autocast:
                            z_a, z_b = model(x_a, x_b)
                        loss = loss_fn(z_a, z_b)  # float32 inside, over the global batch
                        opt.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                        pos.step += 1
                        pos.batch += 1
                        pairs_done += len(xa_u8) * dinfo.world_size
                        if losses.add(loss) and self._flush(losses, pos, stop):
                            self._sync_buffers()
                            self._save_last(pos)
                            raise self._interrupted(stop, pos)
                        if not losses.pending:
                            self._maybe_save_periodic(pos)
                        rate = pairs_done / max(time.perf_counter() - t0, 1e-9)
                        bar.advance(
                            1, epoch=f"{pos.epoch + 1}/{s.epochs}", loss=losses.last, pairs_s=rate
                        )
                    stop_now = self._flush(losses, pos, stop)
                finally:
                    feeder.close()
                elapsed = time.perf_counter() - t0
                pps = pairs_done / elapsed if elapsed > 0 else 0.0
                self._sync_buffers()
                if pos.batch < per_epoch:  # stopped by --max-steps inside the epoch
                    if stop_now:
                        self._save_last(pos)
                        raise self._interrupted(stop, pos)
                    self._end_partial(pos, pps)
                    break
                record = {
                    "epoch": pos.epoch + 1,
                    "loss": pos.epoch_loss_sum / max(pos.epoch_steps, 1),
                    "pairs_per_s": pps,
                    "steps": pos.epoch_steps,
                }
                pos.epochs.append(record)
                pos.epoch, pos.batch, pos.epoch_loss_sum, pos.epoch_steps = (
                    pos.epoch + 1,
                    0,
                    0.0,
                    0,
                )
                self.rundir.update_metrics(epochs=pos.epochs, last=str(self.last_path))
                log(
                    f"epoch {record['epoch']}/{s.epochs}: loss {record['loss']:.4f}, "
                    f"{pps:.1f} pairs/s",
                    self.quiet,
                )
                self._save_last(pos)
                if stop_now:
                    raise self._interrupted(stop, pos)
        return pos

    # --- checkpoints -----------------------------------------------------------------

    def _sync_buffers(self) -> None:
        """Average BatchNorm running statistics over the ranks (all ranks call this).

        DDP broadcasts rank 0's buffers before each forward, but the last forward of a
        stretch updates every rank's own copy; averaging makes the ranks identical and
        lets every rank's frames count in the saved statistics.
        """
        if not self.dinfo.distributed:
            return
        import torch.distributed as dist

        for b in self.twin.buffers():
            if b.is_floating_point():
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b.div_(self.dinfo.world_size)

    def _nonfinite(self, step: int) -> TempoError:
        where = (
            f"the last good checkpoint is {self.last_path}"
            if self.last_path.is_file()
            else "no checkpoint was saved yet"
        )
        return TempoError(
            f"the loss became non-finite (nan/inf) at step {step}; {where}; lower --lr "
            "(or raise --batch-size) and try again"
        )

    def _interrupted(self, stop: StopRequest, pos: Position) -> Interrupted:
        self.rundir.update_metrics(epochs=pos.epochs, last=str(self.last_path), interrupted=True)
        return Interrupted(
            f"{stop.signal_name or 'stop'} received at step {pos.step} (epoch {pos.epoch + 1}); "
            f"resumable checkpoint saved: continue with `tempo pretrain --resume {self.last_path}`"
        )

    def _flush(self, losses: _LossLog, pos: Position, stop: StopRequest) -> bool:
        """Record the pending losses; True when any rank asked to stop (all ranks call this)."""
        values = losses.read()
        bad = not all(math.isfinite(v) for v in values)
        stop_now, bad = self.dinfo.any_flags(stop.requested, bad)
        if bad:
            raise self._nonfinite(pos.step)
        losses.record(values, pos)
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
        finite = torch.stack([p.detach().isfinite().all() for p in self.twin.parameters()])
        if not bool(finite.all()):
            raise self._nonfinite(pos.step)
        ts = training_state(
            self.settings,
            pos,
            optimizer=self.opt.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            rng=capture_rng_state(),
            run_dir=self.rundir.path,
            world_size=self.dinfo.world_size,
        )
        save_checkpoint(
            self.last_path,
            arch=self.arch,
            backbone=self.backbone,
            head=self.head,
            meta=self._meta(pos),
            training_state=ts,
        )

    def _end_partial(self, pos: Position, pps: float) -> None:
        """--max-steps stopped inside an epoch: save a resumable state, report the part."""
        self._save_last(pos)
        part = {
            "epoch": pos.epoch + 1,
            "loss": pos.epoch_loss_sum / max(pos.epoch_steps, 1),
            "pairs_per_s": pps,
            "steps": pos.epoch_steps,
            "partial": True,
        }
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
        s, rundir = self.settings, self.rundir
        if not self.dinfo.is_main:
            return None
        path = final_model_path(s.save_model, rundir.path)
        meta = self._meta(pos)
        save_checkpoint(path, arch=self.arch, backbone=self.backbone, head=self.head, meta=meta)
        if not rundir.metrics.get("epochs"):
            rundir.update_metrics(epochs=pos.epochs)
        rundir.update_metrics(checkpoint=str(path), steps=pos.step)
        log(f"model saved: {path}", self.quiet)
        if eval_root is None:
            return path
        from tempo_cli.data.labelled import class_names
        from tempo_cli.evaluate.linear import evaluate_linear

        loaded = load_model(path)
        record, linear = evaluate_linear(
            loaded,
            eval_root,
            None,
            image_size=s.image_size,
            runs=EVAL_RUNS,
            iterations=EVAL_ITERATIONS,
            batch_size=EVAL_BATCH_SIZE,
            lr=EVAL_LR,
            bn_stats="running",
            seed=s.seed,
            device=self.device,
            quiet=self.quiet,
        )
        save_checkpoint(
            path,
            arch=self.arch,
            backbone=self.backbone,
            head=self.head,
            linear=linear,
            class_names=class_names(eval_root),
            meta=meta,
        )
        rundir.update_metrics(linear_eval=record)
        return path
