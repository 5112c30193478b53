"""Progress display: a rich bar on a terminal, one log line per `log()` otherwise.

`quiet=True` (or stderr not being a terminal) hides the bar; the caller's
`log()` lines (one per epoch / eval) still go to stderr unless `silent=True`.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def log(message: str, quiet: bool = False) -> None:
    """One human-readable line on stderr (suppressed when quiet)."""
    if not quiet:
        console.print(message, highlight=False, soft_wrap=True)


class ProgressBar:
    """A task bar with free-form fields, e.g. `bar.advance(1, loss=0.5, rate="120 pairs/s")`."""

    def __init__(self, total: int | None, description: str, quiet: bool = False) -> None:
        self.show = not quiet and sys.stderr.isatty()
        self.total = total
        self.description = description
        self._progress: Progress | None = None
        self._task = None
        self.start = time.perf_counter()

    def __enter__(self) -> ProgressBar:
        if self.show:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, info="")
        return self

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is not None and self._task is not None:
            info = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, info=info)

    def advance_to(self, done: int) -> None:
        """Show `done` steps finished (for callbacks that report a running total)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
