"""The run folder `runs/<name>/`: resolved settings, metrics, TensorBoard logs, plots.

Every file is written atomically. In a distributed run only rank 0 writes
(`enabled=False` on the other ranks turns every method into a no-op).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli import atomic, places
from tempo_cli.settings import CommandSettings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter


#: Events a SummaryWriter queues for its writer thread. The default, 10, blocks the caller
#: on nearly every event of a long curve (linear eval writes 3,000 steps per result): 4.65 s
#: against 1.57 s for 36,000 events (`python benchmarks/tensorboard_queue.py`); the same
#: events reach the same file, flushed as often (every 120 s and at close).
TENSORBOARD_QUEUE = 4096


class RunDir:
    """`runs/<name>/` for one command invocation."""

    def __init__(
        self,
        settings: CommandSettings,
        root: str | Path | None = None,
        enabled: bool = True,
    ) -> None:
        name = settings.name or places.default_run_name(settings.command.replace(" ", "-"))
        self.path = Path(root) if root is not None else places.runs_dir() / name
        self.enabled = enabled
        self._writers: dict[str, SummaryWriter] = {}
        self._metrics: dict[str, Any] = {}
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def save_config(self, settings: CommandSettings) -> Path:
        """Write the resolved settings to `config.json`."""
        p = self.path / "config.json"
        if self.enabled:
            atomic.write_json(p, settings.to_json_dict())
        return p

    def update_metrics(self, **items: Any) -> Path:
        """Merge `items` into `metrics.json` and rewrite it (atomic)."""
        p = self.path / "metrics.json"
        self._metrics.update(items)
        if self.enabled:
            atomic.write_json(p, self._metrics)
        return p

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self._metrics)

    def tensorboard(self, sub: str = "") -> SummaryWriter | None:
        """A SummaryWriter logging to `runs/<name>/<sub>` (None on non-zero ranks)."""
        if not self.enabled:
            return None
        if sub not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = str(self.path / sub if sub else self.path)
            self._writers[sub] = SummaryWriter(log_dir=log_dir, max_queue=TENSORBOARD_QUEUE)
        return self._writers[sub]

    def save_figure(self, fig: Figure, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as `runs/<name>/<name>.png` (atomic) and close it."""
        p = self.path / name
        if self.enabled:
            with atomic.atomic_path(p) as tmp:
                fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
        # Only pyplot keeps figures alive; one built from `Figure()` needs no closing (and
        # importing pyplot just to close it costs a quarter of a second).
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close(fig)
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        if self.enabled:
            atomic.write_json(p, obj)
        return p

    def close(self) -> None:
        for w in self._writers.values():
            w.flush()
            w.close()
        self._writers.clear()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
