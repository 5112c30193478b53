"""The study's figures, drawn from study.json's dict into `runs/<study>/figures/*.png`.

accuracy_vs_samples.png (headline, all arms, error bars), semisup_vs_samples.png,
knn_vs_samples.png, noise.png (accuracy per noise level), pretrain_loss.png (loss per
epoch), and lrp_<CLASS>.png (the arms' LRP contact sheets of one class side by side, up to
`LRP_CLASSES` classes); sections.py says which section draws which. Each function draws
one table's figure and returns {name, title, path} (path relative to the study folder).
Figures are `matplotlib.figure.Figure` (no pyplot, Agg) and written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli import atomic
from tempo_cli.study.report_models import single_runs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES_DIR = "figures"
#: Classes whose LRP sheets are composed side by side (the first ones in name order).
LRP_CLASSES = 4


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _text(s: Any) -> str:
    """A user string as plain matplotlib text: `$` would start mathtext."""
    return str(s).replace("$", r"\$")


def _save(fig: Figure, study_dir: Path, name: str, title: str) -> dict[str, str]:
    rel = f"{FIGURES_DIR}/{name}.png"
    with atomic.atomic_path(study_dir / rel) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    return {"name": name, "title": title, "path": rel}


def _x_order(columns: list[str]) -> list[str]:
    """Samples-per-class columns as categories: numbers ascending, "full" last."""
    nums = sorted((c for c in columns if c != "full"), key=int)
    return nums + (["full"] if "full" in columns else [])


def accuracy_figure(
    study_dir: Path, table: dict[str, Any], name: str, title: str
) -> dict[str, str]:
    """`<name>.png`: mean ± std per arm against samples per class (categorical x, "full"
    last)."""
    cols = _x_order(table["columns"])
    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot()
    for row in table["rows"]:
        xs = [i for i, c in enumerate(cols) if c in row["cells"]]
        cells = [row["cells"][cols[i]] for i in xs]
        ax.errorbar(
            xs,
            [c["mean"] for c in cells],
            yerr=[c.get("std") or 0.0 for c in cells],
            marker="o",
            capsize=3,
            label=_text(row["arm"]),
        )
    ax.set_xticks(range(len(cols)), cols)
    over = _text(table["over"])
    heading = f"{title}\n({over})" if single_runs(table) else f"{title}\n(± over {over})"
    _finish(ax, "labelled samples per class", "test accuracy", heading, fontsize=9)
    return _save(fig, study_dir, name, title)


def _finish(ax: Axes, xlabel: str, ylabel: str, title: str, **title_kw: Any) -> None:
    """Axis labels, title, a light grid and the arms' legend (the same on every line plot)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **title_kw)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def noise_figure(study_dir: Path, table: dict[str, Any]) -> dict[str, str]:
    """noise.png: accuracy against noise level, one line per arm."""
    title = "Accuracy under Gaussian noise"
    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot()
    for row in table["rows"]:
        levels = sorted(row["accuracy"], key=float)
        ax.plot(
            [float(x) for x in levels],
            [row["accuracy"][x]["mean"] for x in levels],
            marker="o",
            label=_text(row["arm"]),
        )
    _finish(ax, "noise level", "test accuracy", title)
    return _save(fig, study_dir, "noise", title)


def loss_figure(study_dir: Path, table: dict[str, Any]) -> dict[str, str]:
    """pretrain_loss.png: pre-training loss per epoch, one line per arm (and repeat)."""
    title = "Pre-training loss per epoch"
    return _save(loss_plot(table, title), study_dir, "pretrain_loss", title)


def loss_plot(table: dict[str, Any], title: str) -> Figure:
    """The loss figure: x ticks at whole epochs only."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot()
    for row in table["rows"]:
        label = row["arm"] if row["repeat"] is None else f"{row['arm']} (seed {row['repeat']})"
        epochs = [e for e in row["epochs"] if e.get("loss") is not None]
        ax.plot(
            [e["epoch"] for e in epochs],
            [e["loss"] for e in epochs],
            marker="o",
            label=_text(label),
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    _finish(ax, "epoch", "loss", title)
    return fig


def lrp_figures(study_dir: Path, table: dict[str, Any]) -> list[dict[str, str]]:
    """One figure per class (up to LRP_CLASSES): every arm's contact sheet of that class,
    side by side, titled with the arm's name."""
    sheets = {
        row["arm"]: {p.stem: p for p in (study_dir / row["sheets_dir"]).glob("*.png")}
        for row in table["rows"]
    }
    sheets = {arm: files for arm, files in sheets.items() if files}
    if not sheets:
        return []
    classes = sorted(set().union(*(set(f) for f in sheets.values())))[:LRP_CLASSES]
    out = []
    for cls in classes:
        title = f"LRP contact sheets, class {cls}"
        fig = sheet_figure({arm: files.get(cls) for arm, files in sheets.items()}, title)
        out.append(_save(fig, study_dir, f"lrp_{_safe(cls)}", title))
    return out


def _safe(stem: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stem)


def sheet_figure(images: dict[str, Path | None], title: str) -> Figure:
    """The given images side by side (a missing one leaves its panel empty)."""
    import numpy as np
    from PIL import Image

    n = len(images)
    fig = _figure((5.0 * n, 4.0))
    for i, (arm, path) in enumerate(images.items()):
        ax = fig.add_subplot(1, n, i + 1)
        ax.set_axis_off()
        ax.set_title(_text(arm), fontsize=10)
        if path is not None:
            with Image.open(path) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
    fig.suptitle(title)
    return fig


def embed_figures(study_dir: Path, table: dict[str, Any]) -> list[dict[str, str]]:
    """embed_map.png (every arm's t-SNE panel, from its .npz) and embed_neighbours.png
    (every arm's neighbour grid side by side, from its neighbours.json); a figure whose
    files are missing (or whose images moved) is left out."""
    import json

    import numpy as np

    from tempo_cli.embed.figures import MapPanel, map_figure
    from tempo_cli.embed.grid import NEIGHBOURS_JSON, grid_figure, grid_title
    from tempo_cli.embed.maps import describe
    from tempo_cli.errors import TempoError

    out, panels, names, shown = [], [], [], ""
    for row in table["rows"]:
        try:
            with np.load(study_dir / row["npz"], allow_pickle=False) as f:
                if "map" in f:
                    panels.append(MapPanel(row["arm"], f["map"], f["labels"][f["map_index"]]))
                    names = f["class_names"].tolist()
                    shown = describe(len(f["labels"]), f["map_index"])
        except (OSError, ValueError, KeyError):
            continue
    if panels:
        title = f"t-SNE of each arm's {table.get('split')} features ({shown}), coloured by class"
        out.append(_save(map_figure(panels, names, title), study_dir, "embed_map", title))
    blocks: dict[str, dict[str, Any]] = {}
    for row in table["rows"]:
        try:
            record = json.loads((study_dir / row["dir"] / NEIGHBOURS_JSON).read_text())
        except (OSError, ValueError):
            continue
        agreement = (row.get("class_agreement") or {}).get("mean")
        k = table.get("k")
        label = (
            row["arm"] if agreement is None else f"{row['arm']} (agreement @{k} {agreement:.2f})"
        )
        blocks[label] = {"record": record, "checkpoint": row["checkpoint"]}
    if blocks and table.get("data"):
        first = next(iter(blocks.values()))["record"]
        title = grid_title(first, int(table.get("k") or 0))
        try:
            fig = grid_figure(blocks, Path(table["data"]), title)
        except (TempoError, ValueError, KeyError):
            return out
        out.append(_save(fig, study_dir, "embed_neighbours", "Nearest neighbours, every arm"))
    return out


def monitor_figure(study_dir: Path, table: dict[str, Any]) -> dict[str, str]:
    """monitor.png: the pre-training monitor per epoch, one line per arm (and repeat):
    its accuracy (solid: test, dashed: val) and RankMe, the features' effective rank."""
    from matplotlib.ticker import MaxNLocator

    title = "Pre-training monitor per epoch"
    fig = _figure((11.0, 4.0))
    acc, rank = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    kinds = sorted({str(r["kind"]) for r in table["rows"] if r.get("kind") not in (None, "none")})
    for i, row in enumerate(table["rows"]):
        label = row["arm"] if row["repeat"] is None else f"{row['arm']} (seed {row['repeat']})"
        colour = f"C{i % 10}"
        for key, style in (("accuracy", "-"), ("accuracy_val", "--")):
            pts = [(e["epoch"], e[key]) for e in row["epochs"] if e.get(key) is not None]
            if pts:
                name = _text(label if key == "accuracy" else f"{label}, val")
                acc.plot(*zip(*pts, strict=True), style, marker="o", color=colour, label=name)
        pts = [(e["epoch"], e["rankme"]) for e in row["epochs"] if e.get("rankme") is not None]
        if pts:
            rank.plot(*zip(*pts, strict=True), marker="o", color=colour, label=_text(label))
    for ax in (acc, rank):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    what = "/".join(kinds) or "monitor"
    _finish(acc, "epoch", f"{what} accuracy", f"Monitor accuracy ({what})")
    _finish(rank, "epoch", "RankMe (effective rank)", "RankMe of the backbone features")
    fig.tight_layout()
    return _save(fig, study_dir, "monitor", title)
