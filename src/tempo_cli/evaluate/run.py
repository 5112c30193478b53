"""`tempo eval linear | semisup | knn`: every checkpoint x every split, one run folder.

Writes `runs/<name>/`: config.json, metrics.json (`results`: one record per checkpoint and
samples-per-class value), TensorBoard scalars `accuracy` (mean over runs) and
`accuracy_std` under `<samples_pc>/` (as the reference; `<checkpoint>/<samples_pc>/` when
several checkpoints are compared), `curves.png` (mean ± std per iteration) and
`accuracy_vs_samples.png`; prints a table (rows: checkpoints, columns: samples per class).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tempo_cli.errors import TempoError, UsageError
from tempo_cli.evaluate.features import FeatureSet, cached_features
from tempo_cli.evaluate.results import CurveResult
from tempo_cli.report.progress import ProgressBar, log
from tempo_cli.settings.evaluate import (
    EvalKnnSettings,
    EvalLinearSettings,
    EvalSemisupSettings,
    EvalSettings,
)

BASELINES = ("random", "imagenet")


GENERIC_STEMS = ("model", "last", "checkpoint", "final", "best")


def checkpoint_label(spec: str) -> str:
    """A short name for tables and plots: the file stem, with its run folder when the stem
    says nothing (`runs/demo/model.pt` -> `demo-model`)."""
    p = Path(spec)
    if p.stem in GENERIC_STEMS and p.parent.name:
        return f"{p.parent.name}-{p.stem}"
    return p.stem


class Checkpoint:
    """One `--path` value, loaded only when needed (a warm linear/knn run never loads it)."""

    def __init__(self, spec: str, arch: str, seed: int) -> None:
        self.spec = spec
        self.arch = arch
        self.seed = seed
        self._model = None
        self._id: str | None = None
        self.is_baseline = spec in BASELINES and not Path(spec).exists()
        self.label = spec if self.is_baseline else checkpoint_label(spec)

    @property
    def id(self) -> str:
        """Content id for the feature cache (random: arch + seed of its initialisation)."""
        if self._id is None:
            from tempo_cli.models.checkpoint import checkpoint_id

            if self.is_baseline and self.spec == "random":
                self._id = f"random-{self.arch}-seed{self.seed}"
            else:
                self._id = checkpoint_id(self.spec, self.arch)
        return self._id

    def model(self):
        """The LoadedModel (random init drawn from `seed`, so it matches its cache key)."""
        if self._model is None:
            from tempo_cli.models.checkpoint import load_model

            torch.manual_seed(self.seed)
            self._model = load_model(self.spec, self.arch)
        return self._model


def check_splits(root: Path, samples_pc: list[int | None]) -> None:
    """UsageError (exit 2) naming the available splits when a requested one is missing."""
    from tempo_cli.data.labelled import available_splits, split_name

    splits = available_splits(root)
    counts = [s[6:] for s in splits if s.startswith("train-")]
    for sp in samples_pc:
        if split_name(sp) not in splits:
            value = "full" if sp is None else sp
            allowed = f"available: {', '.join(counts) or 'none'}"
            allowed += ", full" if "train" in splits else ""
            allowed += f" (splits in {root}: {', '.join(splits) or 'none'})"
            raise UsageError("--samples-pc", value, allowed)
    if "test" not in splits:
        raise TempoError(f"no test split in {root} (expected {root}/test/<CLASS>/<image>)")


def _unique_labels(checkpoints: list[Checkpoint]) -> None:
    seen: dict[str, int] = {}
    for ck in checkpoints:
        n = seen.get(ck.label, 0)
        seen[ck.label] = n + 1
        if n:
            ck.label = f"{ck.label}-{n + 1}"


def _write_tensorboard(run, sub: str, res: CurveResult) -> None:
    """Scalars `accuracy` and `accuracy_std` per step under `runs/<name>/<sub>`.

    One event per step holding both values, written straight to the event file: the same
    records as two `add_scalar` calls per step (simple_value scalars), at a third of the
    Python cost for 3,000-step curves.
    """
    writer = run.tensorboard(sub)
    if writer is None:
        return
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    file_writer = writer._get_file_writer()
    now = time.time()
    mean, std = res.mean.tolist(), res.std.tolist()
    for step, m, s in zip(res.steps.tolist(), mean, std, strict=True):
        values = [
            Summary.Value(tag="accuracy", simple_value=m),
            Summary.Value(tag="accuracy_std", simple_value=s),
        ]
        file_writer.add_event(Event(summary=Summary(value=values)), step, now)
    writer.flush()


def _save_paths(target: str, combos: list[tuple[str, int | None]]) -> dict[tuple, Path]:
    """--save-model PATH for one combination; PATH with -<checkpoint>-<N> for several."""
    from tempo_cli.report.accuracy_plots import samples_label

    p = Path(target).expanduser()
    if len(combos) == 1:
        return {combos[0]: p}
    suffix = p.suffix or ".pt"
    return {
        (name, sp): p.with_name(f"{p.stem}-{name}-{samples_label(sp)}{suffix}")
        for name, sp in combos
    }


def run_eval(settings: EvalSettings, protocol: str) -> dict[str, Any]:
    """Evaluate every (checkpoint, samples per class) pair; returns the metrics dict."""
    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.labelled import split_name
    from tempo_cli.report.run_dir import RunDir
    from tempo_cli.runtime import resolve_device

    started = time.perf_counter()
    device = resolve_device(settings.device)
    root = resolve_dataset(settings.data)
    samples = settings.samples_pc_list()
    check_splits(root, samples)
    quiet = settings.quiet
    checkpoints = [Checkpoint(p, settings.backbone, settings.seed) for p in settings.path]
    _unique_labels(checkpoints)
    bn_stats = settings.bn_stats
    image_size = settings.image_size

    run = RunDir(settings)
    run.save_config(settings)
    results: list[dict[str, Any]] = []
    curves: list[CurveResult] = []
    multi = len(checkpoints) > 1
    try:
        for ck in checkpoints:
            test: FeatureSet | None = None
            for sp in samples:
                split = split_name(sp)
                if protocol in ("linear", "knn"):

                    def features(s: str, ck: Checkpoint = ck) -> FeatureSet:
                        return cached_features(
                            ck.id,
                            lambda: ck.model().backbone,
                            root,
                            s,
                            image_size,
                            bn_stats,
                            device,
                            settings.seed,
                            quiet,
                        )

                    train = features(split)
                    if test is None:
                        test = features("test")
                    res = _protocol_on_features(settings, protocol, ck, sp, train, test, device)
                else:
                    res = _semisup(settings, ck, root, sp, device)
                curves.append(res)
                sub = f"{ck.label}/{res_sub(sp)}" if multi else res_sub(sp)
                _write_tensorboard(run, sub, res)
                rec = res.record()
                rec["bn_stats"] = bn_stats
                results.append(rec)
                run.update_metrics(protocol=protocol, data=str(root), results=results)
                log(
                    f"{protocol} {ck.label} samples_pc={res_sub(sp)}: final accuracy "
                    f"{rec['accuracy_final_mean']:.3f} ± {rec['accuracy_final_std']:.3f} "
                    f"({rec['runs']} runs, {rec['seconds']:.1f} s)",
                    quiet,
                )
        saved = _save_models(settings, checkpoints, curves)
        figures = _figures(run, protocol, curves, results)
        run.update_metrics(
            saved_models=[str(p) for p in saved],
            figures=[str(p) for p in figures],
            seconds=round(time.perf_counter() - started, 3),
        )
    finally:
        run.close()

    from rich.console import Console

    from tempo_cli.report.tables import accuracy_table

    title = f"{protocol} evaluation: final test accuracy (mean ± std over runs)"
    Console(soft_wrap=True).print(accuracy_table(results, title=title))
    if not quiet:
        log(f"results in {run.path}")
    return run.metrics


def res_sub(sp: int | None) -> str:
    """TensorBoard sub-folder of a split: the reference's `str(samples_pc)`."""
    return str(sp)


def _protocol_on_features(
    settings: EvalSettings,
    protocol: str,
    ck: Checkpoint,
    sp: int | None,
    train: FeatureSet,
    test: FeatureSet,
    device: torch.device,
) -> CurveResult:
    if protocol == "knn":
        from tempo_cli.evaluate.knn import knn_result

        assert isinstance(settings, EvalKnnSettings)
        return knn_result(
            train,
            test,
            checkpoint=ck.label,
            samples_pc=sp,
            k=settings.k,
            temperature=settings.temperature,
        )
    from tempo_cli.evaluate.linear import linear_curves

    assert isinstance(settings, EvalLinearSettings)
    with ProgressBar(
        settings.iterations, f"linear {ck.label} {res_sub(sp)}", settings.quiet
    ) as bar:
        last = [0]

        def progress(step: int) -> None:
            bar.advance(step - last[0])
            last[0] = step

        return linear_curves(
            train,
            test,
            checkpoint=ck.label,
            samples_pc=sp,
            runs=settings.runs,
            iterations=settings.iterations,
            batch_size=settings.batch_size,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            seed=settings.seed,
            device=device,
            progress=progress,
        )


def _semisup(
    settings: EvalSettings, ck: Checkpoint, root: Path, sp: int | None, device: torch.device
) -> CurveResult:
    from tempo_cli.data.labelled import load_split, split_name
    from tempo_cli.evaluate.semisup import finetune_curves

    assert isinstance(settings, EvalSemisupSettings)
    model = ck.model()
    train = load_split(root, split_name(sp), settings.image_size, quiet=settings.quiet)
    test = load_split(root, "test", settings.image_size, quiet=settings.quiet)
    if train.class_names != test.class_names:
        raise TempoError(f"train and test splits of {root} list different classes")
    total = settings.runs * settings.iterations
    with ProgressBar(total, f"semisup {ck.label} {res_sub(sp)}", settings.quiet) as bar:
        return finetune_curves(
            model.backbone,
            model.feature_dim,
            train.images,
            train.labels,
            test.images,
            test.labels,
            len(train.class_names),
            checkpoint=ck.label,
            samples_pc=sp,
            runs=settings.runs,
            iterations=settings.iterations,
            batch_size=settings.batch_size,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            eval_every=settings.eval_every,
            bn_stats=settings.bn_stats,
            seed=settings.seed,
            device=device,
            progress=lambda done: bar.advance(1),
        )


def _save_models(
    settings: EvalSettings, checkpoints: list[Checkpoint], curves: list[CurveResult]
) -> list[Path]:
    """`--save-model`: backbone + the best run's linear head + class names, per result."""
    target = getattr(settings, "save_model", None)
    if not target:
        return []
    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.labelled import class_names
    from tempo_cli.models.checkpoint import save_checkpoint

    names = class_names(resolve_dataset(settings.data))
    paths = _save_paths(target, [(c.checkpoint, c.samples_pc) for c in curves])
    by_label = {ck.label: ck for ck in checkpoints}
    written = []
    for res in curves:
        ck = by_label[res.checkpoint]
        model = ck.model()
        backbone: Any = res.backbone_state if res.backbone_state is not None else model.backbone
        path = save_checkpoint(
            paths[(res.checkpoint, res.samples_pc)],
            arch=model.arch,
            backbone=backbone,
            linear=res.linear,
            class_names=names,
            meta={
                "source": ck.spec,
                "protocol": res.protocol,
                "samples_pc": res.samples_pc,
                "best_run": res.best_run,
                "accuracy_final": float(res.accuracy[res.best_run, -1]),
                "settings": settings.to_json_dict(),
            },
        )
        written.append(path)
    return written


def _figures(run, protocol: str, curves: list[CurveResult], results: list[dict]) -> list[Path]:
    from tempo_cli.report.accuracy_plots import plot_curves, plot_sweep

    out = []
    if protocol != "knn":
        data = [
            {
                "checkpoint": c.checkpoint,
                "samples_pc": c.samples_pc,
                "steps": c.steps,
                "mean": c.mean,
                "std": c.std,
            }
            for c in curves
        ]
        out.append(run.save_figure(plot_curves(data, f"{protocol}: test accuracy"), "curves.png"))
    fig = plot_sweep(results, f"{protocol}: final test accuracy")
    out.append(run.save_figure(fig, "accuracy_vs_samples.png"))
    return out


def run_linear(settings: EvalLinearSettings) -> dict[str, Any]:
    """`tempo eval linear`."""
    return run_eval(settings, "linear")


def run_semisup(settings: EvalSemisupSettings) -> dict[str, Any]:
    """`tempo eval semisup`."""
    return run_eval(settings, "semisup")


def run_knn(settings: EvalKnnSettings) -> dict[str, Any]:
    """`tempo eval knn`."""
    return run_eval(settings, "knn")


RUNNERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "linear": run_linear,
    "semisup": run_semisup,
    "knn": run_knn,
}
