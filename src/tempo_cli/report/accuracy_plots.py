"""Figures of evaluation results: accuracy curves (mean ± std band) and accuracy against
labelled samples per class (one line per checkpoint).

Inputs are plain sequences so that notebooks can call these without the eval core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Points drawn per curve: a 3,000-step curve is thinned to about the figure's pixel width.
MAX_POINTS = 500


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure not registered with pyplot (no pyplot import, no GUI backend; saved
    through the Agg canvas by `savefig`)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _floats(values: Any) -> list[float]:
    """A sequence or tensor as a list of floats."""
    values = values.tolist() if hasattr(values, "tolist") else values
    return [float(v) for v in values]


def _thin(n: int, limit: int = MAX_POINTS) -> list[int]:
    """At most about `limit` evenly spaced indices of 0..n-1, first and last included."""
    if n <= limit:
        return list(range(n))
    stride = -(-(n - 1) // (limit - 1))  # ceil
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return idx


def samples_label(samples_pc: int | None) -> str:
    """Column / legend text of a split: "1", "5", ... or "full"."""
    return "full" if samples_pc is None else str(samples_pc)


def plot_curves(curves: Sequence[dict[str, Any]], title: str = "test accuracy") -> Figure:
    """One panel per samples-per-class value, one line (mean) and band (± std) per checkpoint.

    Args:
        curves: dicts with `checkpoint` (str), `samples_pc` (int | None), `steps` (S,),
            `mean` (S,), `std` (S,) (sequences or tensors); optional `lr` (float | None:
            named in the legend when given).
    """
    from matplotlib.ticker import MaxNLocator

    groups: list[int | None] = []
    for c in curves:
        if c["samples_pc"] not in groups:
            groups.append(c["samples_pc"])
    cols = min(3, max(1, len(groups)))
    rows = (len(groups) + cols - 1) // cols
    fig = _figure((5 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, sp in zip(axes.flat, groups, strict=False):
        for c in (c for c in curves if c["samples_pc"] == sp):
            steps, mean, std = (_floats(c[key]) for key in ("steps", "mean", "std"))
            keep = _thin(len(steps))  # drawing only: the data stay in TensorBoard
            steps, mean, std = ([v[i] for i in keep] for v in (steps, mean, std))
            style = "-" if len(steps) > 1 else "o"
            label = c["checkpoint"] + (f" lr {c['lr']:g}" if c.get("lr") is not None else "")
            (line,) = ax.plot(steps, mean, style, label=label, linewidth=1.2)
            lo = [m - s for m, s in zip(mean, std, strict=True)]
            hi = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"samples per class: {samples_label(sp)}")
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole iterations
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sweep(results: Sequence[dict[str, Any]], title: str = "accuracy") -> Figure:
    """Final accuracy (mean ± std over runs) against samples per class, one line per
    checkpoint (and lr, when the results hold several lrs). `results`: CLI.md `results`
    records (checkpoint, samples_pc, accuracy_final_mean, accuracy_final_std). The full
    train split sits right of the largest N, labelled "full"."""
    ints = sorted({r["samples_pc"] for r in results if r["samples_pc"] is not None})
    full_x = (max(ints) * 1.25 + 1) if ints else 1.0

    def xpos(sp: int | None) -> float:
        return full_x if sp is None else float(sp)

    fig = _figure((6, 4))
    ax = fig.subplots()
    grid = len({r.get("lr") for r in results}) > 1  # one line per checkpoint and lr

    def line(r: dict[str, Any]) -> str:
        lr = r.get("lr")
        return r["checkpoint"] + (f" lr {lr:g}" if grid and lr is not None else "")

    names: list[str] = []
    for r in results:
        if line(r) not in names:
            names.append(line(r))
    for name in names:
        rows = sorted((r for r in results if line(r) == name), key=lambda r: xpos(r["samples_pc"]))
        xs = [xpos(r["samples_pc"]) for r in rows]
        ys = [r["accuracy_final_mean"] for r in rows]
        es = [r["accuracy_final_std"] for r in rows]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    ticks = [float(v) for v in ints] + (
        [full_x] if any(r["samples_pc"] is None for r in results) else []
    )
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(v) for v in ints] + (["full"] if len(ticks) > len(ints) else []))
    ax.set_xlabel("labelled samples per class")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
