"""`tempo study`: plan every stage, then run them arm by arm, resumably, then write the report.

1. Plan: load the study file (`spec.load_study`) and build every stage's command settings
   (`stages.STAGES`); a bad value stops here, before anything is written.
2. Write `runs/<study>/study.toml` (the resolved study).
3. Run, arm by arm (file order), per pre-training repeat: pretrain, classifier (when an
   explanation stage is selected), then the selected stages. Each stage folder gets a
   `stage.json` (see `fingerprint.py`): a stage that is complete with the same settings and
   inputs is skipped; an unfinished pre-training resumes from its last.pt; anything else
   reruns from scratch. Ctrl-C leaves the running stage incomplete (exit 130).
4. Collect every number into `study.json`, write report.html and report.md, print the
   headline table.

Under `torchrun` the units of the plan spread over the processes (study.farm).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from tempo_cli import atomic, places
from tempo_cli.errors import Interrupted, TempoError, UsageError
from tempo_cli.report.progress import log
from tempo_cli.settings.base import CommandSettings
from tempo_cli.settings.study import StudySettings
from tempo_cli.study import fingerprint as fp
from tempo_cli.study.spec import Arm, Study, load_study
from tempo_cli.study.stages import LAST_FILE, STAGES, Stage, StageInputs
from tempo_cli.training.stop import InterruptSeen


@dataclass
class PlannedStage:
    """One stage of one arm (and pre-training repeat), with its validated settings."""

    record: Stage[Any]
    arm: Arm
    repeat: int | None
    folder: Path
    settings: CommandSettings
    #: (what, file) it writes for the arm's later stages (`Stage.provides_for`).
    provides: tuple[str, str] | None = None

    @property
    def stage(self) -> str:
        return self.record.name

    @property
    def label(self) -> str:
        """`<arm>` or `<arm> seed-<k>`, as the progress lines name it."""
        return self.arm.name if self.repeat is None else f"{self.arm.name} seed-{self.repeat}"


def run_study(settings: StudySettings) -> dict[str, Any]:
    """Run the study `settings` name; returns study.json's dict (see study/collect.py)."""
    study = load_study(settings.preset, settings.config, settings.name, settings.device)
    plan = plan_study(study, settings.quiet, settings.debug)
    forced = _forced(settings.force, plan)
    study_dir = places.runs_dir() / study.name
    from tempo_cli.study.farm import FarmInfo, run_farm

    farm = FarmInfo.from_env()  # under torchrun: the units spread over the processes
    if farm is None or farm.rank == 0:
        atomic.write_text(study_dir / "study.toml", study.to_toml())
    started = time.perf_counter()
    if farm is None:
        run_plan(plan, forced, settings.quiet)
    elif not run_farm(farm, plan, forced, settings.quiet, study.ddp):
        return {}  # not rank 0: rank 0 writes study.json
    data = finish(study, study_dir, settings.quiet)
    log(f"study {study.name} done in {_clock(time.perf_counter() - started)}", settings.quiet)
    return data


def plan_study(study: Study, quiet: bool = False, debug: bool = False) -> list[PlannedStage]:
    """Every stage of the study in run order, settings built and validated; writes nothing."""
    root = places.runs_dir()
    plan: list[PlannedStage] = []
    for arm in study.arms:
        for repeat in range(arm.repeats) if arm.repeats > 1 else [None]:
            base = f"{study.name}/{arm.folder}" + ("" if repeat is None else f"/seed-{repeat}")
            reads: dict[str, str | None] = {"backbone": arm.path}
            for stage in (s for s in STAGES.values() if s.wanted(study, arm)):
                if (stage.once and repeat not in (None, 0)) or stage.made_by(study):
                    continue
                folder = root / base / stage.name
                path = reads[stage.reads] if stage.reads else None
                inputs = StageInputs(f"{base}/{stage.name}", folder, path, quiet, debug)
                settings = stage.settings_for(study, arm, repeat, inputs)
                stage.check(settings)
                provides = stage.provides_for(study, arm)
                plan.append(PlannedStage(stage, arm, repeat, folder, settings, provides))
                if provides:
                    what, file = provides
                    reads[what] = str(folder / file)
    return plan


def _forced(force: list[str], plan: list[PlannedStage]) -> frozenset[str]:
    """`--force` stages, each one that this study runs."""
    present = list(dict.fromkeys(p.stage for p in plan))
    for name in force:
        if name not in present:
            raise UsageError("--force", name, "stages of this study: " + ", ".join(present))
    return frozenset(force)


@dataclass(frozen=True)
class DdpRun:
    """A pre-training run by a DDP group of processes (study.farm), seen by its leader:
    their global `ranks` and `start`, called with the settings the members run (those of a
    resume included) or None when the stage is skipped."""

    ranks: tuple[int, ...]
    start: Callable[[CommandSettings | None], None]


@dataclass
class Clock:
    """Elapsed time and the estimate of the progress lines (from the stages that ran)."""

    started: float = field(default_factory=time.perf_counter)
    ran: dict[str, list[float]] = field(default_factory=dict)

    def line(self, k: int, plan: list[PlannedStage]) -> str:
        p = plan[k - 1]
        head = f"[{k}/{len(plan)}] {escape(p.label)} {p.stage}"
        elapsed = f"elapsed {_clock(time.perf_counter() - self.started)}"
        left = self.left(plan[k - 1 :])
        return f"{head} · {elapsed}" + ("" if left is None else f" · about {_clock(left)} left")

    def left(self, rest: list[PlannedStage]) -> float | None:
        """Seconds the `rest` should take: each stage as long as the same stage of the arms
        before it took; a stage not seen yet as the mean of the other evaluation stages seen
        (a resumable training, a pre-training ten times longer, would make the first
        estimates absurd). None until that can be said."""
        long = {name for name, s in STAGES.items() if s.resumes}
        evals = [t for name, ts in self.ran.items() if name not in long for t in ts]
        total = 0.0
        for q in rest:
            if q.stage in self.ran:
                total += _mean(self.ran[q.stage], 0.0)
            elif not q.record.resumes and evals:
                total += _mean(evals, 0.0)
            else:
                return None
        return total


def _mean(values: list[float] | None, default: float) -> float:
    return sum(values) / len(values) if values else default


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def run_plan(plan: list[PlannedStage], forced: frozenset[str], quiet: bool) -> None:
    """Run (or skip) every planned stage in order, one progress line each.

    Ctrl-C stops the study: at once (KeyboardInterrupt, or the stage's own clean stop),
    and at the latest when the stage it came in ends, should that stage have swallowed it.
    """
    clock = Clock()
    with InterruptSeen() as ctrl_c:
        for k, p in enumerate(plan, start=1):
            try:
                seconds = run_stage(p, p.stage in forced, clock.line(k, plan), quiet, ctrl_c)
            except (KeyboardInterrupt, Interrupted) as e:
                raise Interrupted(
                    f"interrupted in {p.label} {p.stage}; rerun the same command to continue "
                    "(finished stages are skipped, a pre-training resumes from its last.pt)"
                ) from e
            except TempoError as e:
                raise TempoError(f"{p.label} {p.stage}: {e}") from e
            if seconds is not None:
                clock.ran.setdefault(p.stage, []).append(seconds)


def run_stage(
    p: PlannedStage,
    force: bool,
    line: str,
    quiet: bool,
    ctrl_c: InterruptSeen | None = None,
    rank: int = 0,
    ddp: DdpRun | None = None,
) -> float | None:
    """Skip, resume or run one stage; returns its wall time when it ran, None when skipped.

    `rank`: the process that runs it (study.farm), recorded in stage.json. `ddp`: a
    pre-training this process leads in a DDP group (study.farm): its ranks are recorded and
    fingerprinted, and `ddp.start` tells the members what was decided. A stage that saw
    a Ctrl-C (`ctrl_c.seen`) is never recorded complete, even when its
    command swallowed the KeyboardInterrupt and returned: it raises KeyboardInterrupt."""
    stage = p.record
    processes = len(ddp.ranks) if ddp is not None else 1
    key = fp.fingerprint(p.settings, stage.input_file(p.settings), places.runs_dir(), processes)
    record = fp.read_record(p.folder)
    if not force and fp.is_done(record, key, p.folder) and not _newly_runnable(p, record):
        log(f"{line.split(' ', 1)[0]} skip {escape(p.label)} {p.stage}: done, settings and "
            "inputs unchanged", quiet)  # fmt: skip
        if ddp is not None:
            ddp.start(None)
        return None
    log(line, quiet)
    settings = p.settings
    last = p.folder / LAST_FILE
    same = record is not None and record.get("fingerprint") == key
    if stage.resumes and not force and same and last.is_file():
        log(f"resuming {escape(p.label)} {p.stage} from {last}", quiet)
        settings = settings.model_copy(update={"resume": last})
    elif p.folder.exists():
        shutil.rmtree(p.folder)  # changed settings or inputs, forced, or never finished
    status: dict[str, Any] = {
        "stage": p.stage, "arm": p.arm.name, "repeat": p.repeat, "fingerprint": key, "rank": rank,
    }  # fmt: skip
    if ddp is not None:
        status["ddp_ranks"] = list(ddp.ranks)
    fp.write_record(p.folder, {**status, "complete": False, "seconds": None})
    started = time.perf_counter()
    reason = stage.skip_reason(settings)
    if ddp is not None:
        ddp.start(settings if reason is None else None)
    if reason is None:
        with _stage_output(p.folder):
            stage.run(settings)
    else:
        status["skipped"] = reason
        log(f"{escape(p.label)} {p.stage} not run: {escape(reason)}", quiet)
    if ctrl_c is not None and ctrl_c.seen:
        raise KeyboardInterrupt  # the record stays incomplete: the rerun redoes the stage
    seconds = round(time.perf_counter() - started, 3)
    fp.write_record(p.folder, {**status, "complete": True, "seconds": seconds})
    return seconds


#: A stage's own printed tables, kept in its folder (the study prints one headline).
OUTPUT_FILE = "output.txt"


@contextlib.contextmanager
def _stage_output(folder: Path) -> Iterator[None]:
    """Send the stage's stdout (its command's tables) to `<folder>/output.txt`; progress
    lines and warnings (stderr) still reach the terminal."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue():
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_text(folder / OUTPUT_FILE, buffer.getvalue())


def _newly_runnable(p: PlannedStage, record: dict[str, Any] | None) -> bool:
    """A stage recorded as skipped (e.g. no hand masks) that could run now."""
    return bool(record and "skipped" in record) and p.record.skip_reason(p.settings) is None


def finish(study: Study, study_dir: Path, quiet: bool) -> dict[str, Any]:
    """study.json, report.html and report.md from the stage folders; prints the headline."""
    from tempo_cli.study.collect import collect_study
    from tempo_cli.study.intervals import headline_verdicts

    data = collect_study(study, study_dir)
    atomic.write_json(study_dir / "study.json", data)
    report = write_reports(study_dir, data)
    if data.get("headline"):
        from rich.console import Console

        console = Console()
        console.print(headline_table(data))  # stdout: the command's answer
        for sentence in headline_verdicts(data):  # with its uncertainty, in words
            console.print(escape(sentence), highlight=False, soft_wrap=True)
    log(f"report in {_shown(report)}", quiet)
    return data


def write_reports(study_dir: Path, data: dict[str, Any]) -> Path:
    """The sections' figures (drawn once), then report.html (returned) and report.md."""
    from tempo_cli.study.report_html import write_html
    from tempo_cli.study.report_md import write_markdown
    from tempo_cli.study.sections import draw_figures

    figs = draw_figures(study_dir, data)
    html = write_html(study_dir, data, figs)
    write_markdown(study_dir, data, figs)
    return html


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def headline_table(data: dict[str, Any]) -> Any:
    """The headline section's table model (the reports' own) as a rich table: the best
    per column in bold, the gain over the baseline in points after the value."""
    from rich.table import Table

    from tempo_cli.study.report_models import fmt_gain
    from tempo_cli.study.sections import section

    headline = section("headline")
    assert headline.view is not None
    model = headline.view(data["headline"])
    table = Table(title=escape(headline.title), caption=escape(model.caption))
    for i, head in enumerate(model.header):
        table.add_column(escape(head), justify="left" if i == 0 else "right")
    for row in model.rows:
        cells = []
        for c in row.cells:
            text = escape(c.text + ("" if c.gain is None else f" ({fmt_gain(c.gain)})"))
            cells.append(f"[bold]{text}[/bold]" if c.best else text)
        table.add_row(escape(row.head), *cells)
    return table
