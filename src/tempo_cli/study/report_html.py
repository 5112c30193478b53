"""`runs/<study>/report.html`: the study as one self-contained page.

Inline CSS (with a print stylesheet), figures embedded as `data:image/png;base64`, no
external URL, scripts or fonts. Every string that can come from the user (arm names,
paths, settings values, the study's name) goes through `html.escape`. Table cells carry
stable attributes for tools and tests: `data-table`, `data-arm`, `data-col`, `data-mean`,
`data-std`, `data-n`, `data-gain` (the exact study.json numbers; the text is rounded).
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from tempo_cli import atomic
from tempo_cli.study import figures
from tempo_cli.study import report_models as t

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1em}caption{caption-side:bottom;text-align:left;
font-size:.85em;color:#555;padding-top:.3em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td.arm{text-align:left}thead th{background:#f3f3f3}
td.best{font-weight:bold;background:#eef7ee}.gain{display:block;font-size:.8em;color:#555}
.gain.neg{color:#a33}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;
white-space:pre-wrap;word-break:break-all;font-size:.8em}.muted{color:#777}
@media print{body{margin:0;max-width:none;font-size:10pt}h2{break-after:avoid}
table,figure{break-inside:avoid}td.best{background:none}pre{white-space:pre-wrap}}
"""


def write_html(study_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write `study_dir/report.html` from study.json's dict (drawing the figures when
    `data` has none yet); returns its path."""
    study_dir = Path(study_dir)
    if "figures" not in data:
        figures.write_figures(study_dir, data)
    name = escape(str(data.get("name", "")))
    body = [f"<h1>Study {name}</h1>", _intro(data)]
    body += [s for s in _sections(study_dir, data) if s]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tempo study {name}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = study_dir / "report.html"
    atomic.write_text(path, page)
    return path


def _sections(study_dir: Path, data: dict[str, Any]) -> list[str]:
    """The report's sections in order ("" for one without data); figures are embedded
    next to their table."""
    figs = {f["name"]: f for f in data.get("figures", [])}

    def fig(name: str) -> str:
        f = figs.get(name)
        return _figure(study_dir, f["path"], f["title"]) if f else ""

    lrp_figs = "".join(fig(n) for n in figs if n.startswith("lrp_"))
    return [
        _accuracy_section(data.get("headline"), "Linear probe (headline)", "headline")
        + fig("accuracy_vs_samples"),
        _lr_section(data.get("lr")),
        _accuracy_section(data.get("semisup"), "Semi-supervised fine-tuning", "semisup")
        + fig("semisup_vs_samples"),
        _accuracy_section(data.get("knn"), "kNN", "knn") + fig("knn_vs_samples"),
        _relevance_section(data.get("relevance")),
        _noise_section(data.get("noise")) + fig("noise"),
        _lrp_section(data.get("lrp"), lrp_figs),
        _segment_section(data.get("segment")),
        _figures_section(study_dir, data, fig("pretrain_loss")),
        _appendix(data),
    ]


def _intro(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td class='arm'>{escape(str(v))}</td></tr>"
        for k, v in t.intro_items(data)
    )
    return f"<table class='intro'>{rows}</table>"


def _cell_attrs(table: str, arm: str, col: str, cell: dict[str, Any] | None) -> str:
    attrs = {"data-table": table, "data-arm": arm, "data-col": col}
    if cell:
        attrs.update({"data-mean": repr(cell["mean"]), "data-n": str(cell.get("n"))})
        if cell.get("std") is not None:
            attrs["data-std"] = repr(cell["std"])
    return "".join(f' {k}="{escape(v)}"' for k, v in attrs.items())


def _note(c: t.CellModel) -> str:
    return f" <span class='muted'>({escape(c.note)})</span>" if c.note else ""


def _rich_td(row: t.RowModel, c: t.CellModel, cls: str) -> str:
    """A <td> carrying the data attributes itself (accuracy and lr tables), with the gain
    under the text."""
    attrs = _cell_attrs(row.table, row.arm, c.col or "", c.cell)
    text = escape(c.text)
    if c.gain is not None:
        attrs += f' data-gain="{escape(repr(c.gain))}"'
        span = "gain neg" if c.gain < 0 else "gain"
        text += f"<span class='{span}'>{escape(t.fmt_gain(c.gain))} pts</span>"
    if cls:
        cls = f" class='{cls}{' best' if c.best else ''}'"
    return f"<td{cls}{attrs}>{text}{_note(c)}</td>"


def _plain_td(row: t.RowModel, c: t.CellModel) -> str:
    """A <td> whose value (if any) carries the data attributes in a span."""
    text = escape(c.text)
    if c.muted:
        text = f"<span class='muted'>{text}</span>"
    elif c.col is not None:
        text = f"<span{_cell_attrs(row.table, row.arm, c.col, c.cell)}>{text}</span>"
    return f"<td>{text}{_note(c)}</td>"


def _table(m: t.TableModel, caption: str, cls: str | None = None) -> str:
    """`m` as a <table>; `cls` None: plain cells, else rich cells of that class."""
    th = "".join(f"<th>{escape(h)}</th>" for h in m.header)
    body = "".join(
        f"<tr><td class='arm'>{escape(row.head)}</td>"
        + "".join(_plain_td(row, c) if cls is None else _rich_td(row, c, cls) for c in row.cells)
        + "</tr>"
        for row in m.rows
    )
    return (
        f"<table data-table='{m.key}'><caption>{caption}</caption>"
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    )


def _accuracy_section(table: dict[str, Any] | None, title: str, key: str) -> str:
    """A table of rows = arms, columns = samples per class, cells mean ± std + gain."""
    if not table:
        return ""
    base = table.get("baseline")
    caption = (
        f"Final test accuracy, mean ± std over {escape(table['over'])}. "
        "Columns: labelled samples per class. Bold: best per column. "
        + (f"Under each cell: the gain in points over the baseline {escape(base)}." if base else "")
    )
    return (
        f"<section id='{key}'><h2>{escape(title)}</h2>"
        + _table(t.accuracy_model(table, key), caption, "cell")
        + "</section>"
    )


def _lr_section(view: dict[str, Any] | None) -> str:
    """Each arm at the reference lr and at the chosen lr, with the arm order per column."""
    if not view:
        return ""
    order = "".join(f"<li>{escape(line)}</li>" for line in t.lr_orders(view))
    note = (
        ""
        if view["reference_lr"] is not None
        else "<p>The reference lr 0.01 was not in the grid.</p>"
    )
    caption = "Linear probe at the reference lr and at the lr chosen on val (or on test, marked)."
    return (
        "<section id='lr'><h2>Learning-rate robustness</h2>"
        + note
        + _table(t.lr_model(view), caption, "")
        + "<p>Order of the arms, best first:</p><ul>"
        + order
        + "</ul></section>"
    )


def _relevance_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    cap = "Relative relevance inside the hand masks (share of positive LRP relevance), mean ± std."
    return (
        "<section id='relevance'><h2>Relative relevance</h2>"
        + _table(t.relevance_model(table), cap)
        + "</section>"
    )


def _noise_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    return (
        "<section id='noise'><h2>Accuracy under noise</h2>"
        + _table(t.noise_model(table), "Test accuracy per Gaussian noise level.")
        + "</section>"
    )


def _lrp_section(table: dict[str, Any] | None, figs: str) -> str:
    if not table:
        return ""
    cap = "Test accuracy of each arm's classifier explained by LRP."
    return "<section id='lrp'><h2>LRP</h2>" + _table(t.lrp_model(table), cap) + figs + "</section>"


def _segment_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    cap = (
        "Mask R-CNN: final AP and the first evaluated iteration reaching 90% of the final segm AP."
    )
    return (
        "<section id='segment'><h2>Segmentation</h2>"
        + _table(t.segment_model(table), cap)
        + "</section>"
    )


def _figures_section(study_dir: Path, data: dict[str, Any], loss_fig: str) -> str:
    curves = "".join(
        _figure(study_dir, c["path"], f"Linear-probe curves: {c['arm']}")
        for c in data.get("curves", [])
    )
    if not (curves or loss_fig):
        return ""
    return f"<section id='figures'><h2>Figures</h2>{loss_fig}{curves}</section>"


def _figure(study_dir: Path, rel: str, caption: str) -> str:
    """A PNG under the study folder as an embedded image ("" when it is missing or outside)."""
    root = study_dir.resolve()
    path = (study_dir / rel).resolve()
    if not path.is_file() or root not in path.parents:
        return ""
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{escape(caption)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _appendix(data: dict[str, Any]) -> str:
    """Versions, device, wall time per stage and every stage's resolved settings."""
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    parts = [
        "<section id='appendix'><h2>Appendix: settings and reproducibility</h2>",
        f"<p>Versions: {escape(versions)}. Device: {escape(str(data.get('device')))}.</p>",
        _table(t.stages_model(data), "Wall time per stage."),
        "<h3>Resolved study</h3>",
        f"<pre>{escape(json.dumps(data.get('study', {}), indent=1, default=str))}</pre>",
    ]
    for arm, info in data.get("arms", {}).items():
        source = escape(str(info.get("source")))
        parts.append(f"<h3>Arm {escape(arm)} <span class='muted'>({source})</span></h3>")
        for run in info.get("runs", []):
            for stage, s in run.get("stages", {}).items():
                settings = " ".join(
                    f"{k}={json.dumps(v, default=str)}" for k, v in s.get("config", {}).items()
                )
                parts.append(
                    f"<p><b>{escape(run['dir'])}/{escape(stage)}</b></p><pre>{escape(settings)}</pre>"
                )
    parts.append("</section>")
    return "\n".join(parts)
