"""`tempo eval linear | semisup | knn`: every checkpoint x every split, one run folder.

Writes `runs/<name>/`: config.json, metrics.json (`results`: one record per checkpoint,
samples-per-class value and lr of an `--lr` grid; `selected_on`: val or test, the split
the chosen lr and kept run were picked on), TensorBoard scalars `accuracy` (mean over
runs) and `accuracy_std` under `<samples_pc>/` (as the reference; `<checkpoint>/
<samples_pc>/` when several checkpoints are compared; `/lr_<lr>` with a grid), the
protocol's figures (`curves.png`: mean ± std per iteration; `accuracy_vs_samples.png`),
`labelled_files.json` when labels were drawn from train/, predictions.npz (each run's
per-image test and val predictions, `evaluate/predictions.py`); prints a table (rows:
checkpoints (x lr), columns: samples per class) and, with several checkpoints, each
one's paired 95% interval against the first (`evaluate/intervals.py`). What is evaluated
is the protocol's business (`evaluate/protocols.py`); which images it trains on,
`evaluate/train_labels.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli.errors import Interrupted
from tempo_cli.evaluate.checkpoints import Checkpoint, unique_labels
from tempo_cli.evaluate.intervals import print_comparisons, record_comparisons
from tempo_cli.evaluate.predictions import PREDICTIONS_FILE, PredictionsFile
from tempo_cli.evaluate.protocol import CURVES_FIGURE, SWEEP_FIGURE, EvalProtocol, Task
from tempo_cli.evaluate.protocols import protocol_for
from tempo_cli.evaluate.results import CurveResult
from tempo_cli.evaluate.train_labels import (
    TrainingLabels,
    resolve_training_labels,
    selection_split,
)
from tempo_cli.report.progress import log
from tempo_cli.settings.evaluate import EvalHeadSettings, EvalSettings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tempo_cli.report.run_dir import RunDir


def resolve_labels(settings: EvalSettings, root: Path) -> dict[int | None, TrainingLabels]:
    """The training labels of every `--samples-pc` value (before anything is written):
    UsageError (exit 2) naming what is available when one cannot be had."""
    heads = settings if isinstance(settings, EvalHeadSettings) else None  # knn: one run
    runs = 1 if heads is None else heads.runs
    resample = heads is not None and heads.resample_labels
    return {
        sp: resolve_training_labels(root, sp, seed=settings.seed, runs=runs, resample=resample)
        for sp in settings.samples_pc_list()
    }


def _write_tensorboard(run: RunDir, sub: str, res: CurveResult) -> None:
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

    file_writer = writer.file_writer  # the SummaryWriter's own event file (open until closed)
    assert file_writer is not None
    now = time.time()
    mean, std = res.mean.tolist(), res.std.tolist()
    for step, m, s in zip(res.steps.tolist(), mean, std, strict=True):
        values = [
            Summary.Value(tag="accuracy", simple_value=m),
            Summary.Value(tag="accuracy_std", simple_value=s),
        ]
        file_writer.add_event(Event(summary=Summary(value=values)), step, now)
    writer.flush()


def _sub(res: CurveResult, task: Task, multi: bool, grid: bool) -> str:
    """TensorBoard sub-folder: `<samples_pc>` (the reference's), under `<checkpoint>/`
    when several are compared, with `/lr_<lr>` when an lr grid ran."""
    sub = f"{task.label}/{task.sub}" if multi else task.sub
    return f"{sub}/lr_{res.lr:g}" if grid else sub


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


def _image_size(settings: EvalSettings, ck: Checkpoint) -> int:
    """`--image-size` for this checkpoint (auto: the size it records); warns on a mismatch."""
    recorded = ck.recorded_image_size
    warning = settings.image_size_warning(recorded, ck.label)
    if warning:
        log(f"warning: {warning}")
    return settings.resolved_image_size(recorded)


def run_eval(settings: EvalSettings) -> dict[str, Any]:
    """Evaluate every (checkpoint, samples per class) pair with the protocol of `settings`;
    returns the metrics dict."""
    from tempo_cli.data.labelled_data import open_labelled
    from tempo_cli.data.near_copies import check_and_warn
    from tempo_cli.report.run_dir import RunDir
    from tempo_cli.runtime import resolve_device

    started = time.perf_counter()
    protocol = protocol_for(settings)
    device = resolve_device(settings.device)
    root = open_labelled(settings.data, settings.split_options())
    labels = resolve_labels(settings, root)
    val_split = selection_split(root)
    checkpoints = [Checkpoint(p, settings.backbone, settings.seed) for p in settings.path]
    unique_labels(checkpoints)

    run = RunDir(settings)
    run.save_config(settings)
    run.update_metrics(data_split=root.describe(), near_copies=check_and_warn(root))
    _list_labelled_files(run, root, labels)
    results: list[dict[str, Any]] = []
    curves: list[CurveResult] = []
    kept = PredictionsFile(run.path / PREDICTIONS_FILE, root)  # per-image, per run
    multi = len(checkpoints) > 1  # TensorBoard: <checkpoint>/<samples_pc>/ when comparing
    selected_on = "test" if val_split is None else "val"
    try:
        for ck in checkpoints:
            image_size, shared = _image_size(settings, ck), {}
            for task_labels in labels.values():
                task = Task(settings, ck, task_labels, root, image_size, device, shared, val_split)
                found = protocol.evaluate(task)
                for res in found:
                    curves.append(res)
                    _write_tensorboard(run, _sub(res, task, multi, len(found) > 1), res)
                    results.append(_record(res, task))
                    kept.add(res, task.labels)
                kept.write()
                run.update_metrics(protocol=protocol.name, data=str(root), results=results)
                if any("selected_on" in r for r in results):
                    run.update_metrics(selected_on=selected_on)
                _log_results(protocol, task, results[-len(found) :], settings.quiet)
        saved = _save_models(settings, checkpoints, [c for c in curves if c.selected])
        figures = _figures(run, protocol, curves, results)
        comparisons = record_comparisons(run) if multi else []
        run.update_metrics(
            saved_models=[str(p) for p in saved],
            figures=[str(p) for p in figures],
            seconds=round(time.perf_counter() - started, 3),
        )
    except Interrupted:
        run.update_metrics(interrupted=True)
        raise
    finally:
        run.close()
    _print_table(protocol, results)
    print_comparisons(comparisons)
    log(f"results in {run.path}", settings.quiet)
    return run.metrics


#: The run folder's list of the labelled files of every drawn subset.
LABELLED_FILES = "labelled_files.json"


def _list_labelled_files(run: RunDir, root: Path, labels: dict[int | None, TrainingLabels]) -> None:
    """runs/<name>/labelled_files.json: the files each drawn subset holds (by split)."""
    drawn = {str(sp): tl.listing(root) for sp, tl in labels.items() if tl.drawn}
    if drawn:
        run.write_json(LABELLED_FILES, drawn)


def _record(res: CurveResult, task: Task) -> dict[str, Any]:
    """The metrics.json record, with how the features were made."""
    rec = res.record()
    rec["bn_stats"] = task.settings.bn_stats
    rec["image_size"] = task.image_size
    return rec


def _log_results(
    protocol: EvalProtocol, task: Task, records: list[dict[str, Any]], quiet: bool
) -> None:
    for rec in records:
        lr = f" lr={rec['lr']:g}" if len(records) > 1 else ""
        mark = f" (chosen on {rec['selected_on']})" if len(records) > 1 and rec["selected"] else ""
        log(
            f"{protocol.name} {task.label} samples_pc={task.sub}{lr}: final accuracy "
            f"{rec['accuracy_final_mean']:.3f} ± {rec['accuracy_final_std']:.3f} "
            f"({rec['runs']} runs, {rec['seconds']:.1f} s){mark}",
            quiet,
        )


def _print_table(protocol: EvalProtocol, results: list[dict[str, Any]]) -> None:
    from rich.console import Console

    from tempo_cli.report.tables import accuracy_table

    title = f"{protocol.name} evaluation: final test accuracy (mean ± std over runs)"
    Console(soft_wrap=True).print(accuracy_table(results, title=title))


def _save_models(
    settings: EvalSettings, checkpoints: list[Checkpoint], curves: list[CurveResult]
) -> list[Path]:
    """`--save-model`: backbone + the best run's linear head + class names, per selected
    result (the chosen lr of a grid; its best run, chosen on val when there is one) at
    every samples_pc, or at `--save-samples-pc` alone."""
    # Only the protocols that train a head (linear, semisup) have --save-model.
    if not isinstance(settings, EvalHeadSettings) or not settings.save_model:
        return []
    target = settings.save_model
    curves = [c for c in curves if settings.saves(c.samples_pc)]  # --save-samples-pc
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
            image_size=settings.resolved_image_size(ck.recorded_image_size),
            meta={
                "source": ck.spec,
                "protocol": res.protocol,
                "samples_pc": res.samples_pc,
                "best_run": res.best_run,
                "accuracy_final": float(res.accuracy[res.best_run, -1]),
                "lr": res.lr,
                "selected_on": res.selected_on,
                "settings": settings.to_json_dict(),
            },
        )
        written.append(path)
    return written


def _curves_figure(protocol: str, curves: list[CurveResult], results: list[dict]) -> Figure:
    from tempo_cli.report.accuracy_plots import plot_curves

    grid = len({c.lr for c in curves}) > 1

    data = [
        {
            "checkpoint": c.checkpoint,
            "samples_pc": c.samples_pc,
            "lr": c.lr if grid else None,
            "steps": c.steps,
            "mean": c.mean,
            "std": c.std,
        }
        for c in curves
    ]
    return plot_curves(data, f"{protocol}: test accuracy")


def _sweep_figure(protocol: str, curves: list[CurveResult], results: list[dict]) -> Figure:
    from tempo_cli.report.accuracy_plots import plot_sweep

    return plot_sweep(results, f"{protocol}: final test accuracy")


#: How each figure a protocol may ask for (`EvalProtocol.figures`) is drawn.
FIGURES: dict[str, Callable[[str, list[CurveResult], list[dict]], Figure]] = {
    CURVES_FIGURE: _curves_figure,
    SWEEP_FIGURE: _sweep_figure,
}


def _figures(
    run: RunDir, protocol: EvalProtocol, curves: list[CurveResult], results: list[dict]
) -> list[Path]:
    """The protocol's figures, saved in the order of `protocol.figures`."""
    return [
        run.save_figure(FIGURES[name](protocol.name, curves, results), name)
        for name in protocol.figures
    ]


# The names `tempo eval linear|semisup|knn` call (cli/evaluate.py): the settings' class
# picks the protocol.
run_linear = run_semisup = run_knn = run_eval
