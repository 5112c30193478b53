"""`runs/<study>/report.html`: the study as one self-contained page.

Inline CSS (with a print stylesheet), figures embedded as `data:image/png;base64`, no
external URL, scripts or fonts. Every string that can come from the user (arm names,
paths, settings values, the study's name) goes through `html.escape`. Table cells carry
stable attributes for tools and tests: `data-table`, `data-arm`, `data-col`, `data-mean`,
`data-std`, `data-n`, `data-gain` (the exact study.json numbers; the text is rounded).
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from tempo_cli import atomic
from tempo_cli.study import report_models as t
from tempo_cli.study.intervals import headline_verdicts
from tempo_cli.study.sections import SECTIONS, Figure, Section

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
.verdict{font-size:1.1em;font-weight:600}
@media print{body{margin:0;max-width:none;font-size:10pt}h2{break-after:avoid}
table,figure{break-inside:avoid}td.best{background:none}pre{white-space:pre-wrap}}
"""


def write_html(study_dir: str | Path, data: dict[str, Any], figs: dict[str, list[Figure]]) -> Path:
    """Write `study_dir/report.html` from study.json's dict and the sections' figures
    (sections.draw_figures); returns its path."""
    study_dir = Path(study_dir)
    name = escape(str(data.get("name", "")))
    verdicts = "".join(f"<p class='verdict'>{escape(v)}</p>" for v in headline_verdicts(data))
    body = [f"<h1>Study {name}</h1>", verdicts, _intro(data)]
    for sec in SECTIONS:
        body.append(_section(study_dir, sec, data.get(sec.key), figs.get(sec.key, [])))
    body.append(_appendix(data))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tempo study {name}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    path = study_dir / "report.html"
    atomic.write_text(path, page)
    return path


def _section(
    study_dir: Path, sec: Section, table: dict[str, Any] | None, figs: list[Figure]
) -> str:
    """One section: its notes, table and listing (when study.json has its table), then its
    figures embedded; "" when it has neither."""
    parts = []
    if table and sec.view is not None:
        model = sec.view(table)
        parts += [f"<p>{escape(note)}</p>" for note in model.notes]
        parts.append(_table(model))
        if model.listing:
            title, items = model.listing
            lis = "".join(f"<li>{escape(item)}</li>" for item in items)
            parts.append(f"<p>{escape(title)}</p><ul>{lis}</ul>")
    parts += [_figure(study_dir, fig["path"], fig["title"]) for fig in figs]
    if not any(parts):
        return ""
    return f"<section id='{sec.key}'><h2>{escape(sec.title)}</h2>{''.join(parts)}</section>"


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


def _table(m: t.TableModel) -> str:
    """`m` as a <table>: plain cells, or (`cell_class` set) cells with the data attributes."""
    th = "".join(f"<th>{escape(h)}</th>" for h in m.header)
    cls = m.cell_class
    body = "".join(
        f"<tr><td class='arm'>{escape(row.head)}</td>"
        + "".join(_plain_td(row, c) if cls is None else _rich_td(row, c, cls) for c in row.cells)
        + "</tr>"
        for row in m.rows
    )
    return (
        f"<table data-table='{m.key}'><caption>{escape(m.caption)}</caption>"
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    )


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
    m = t.appendix_model(data)
    parts = [
        "<section id='appendix'><h2>Appendix: settings and reproducibility</h2>",
        f"<p>{escape(m.facts)}</p>",
        _table(t.stages_model(data)),
        f"<h3>Resolved study</h3><pre>{escape(m.study)}</pre>",
    ]
    for arm, source, stages in m.arms:
        parts.append(f"<h3>Arm {escape(arm)} <span class='muted'>({escape(source)})</span></h3>")
        parts += [f"<p><b>{escape(s)}</b></p><pre>{escape(text)}</pre>" for s, text in stages]
    parts.append("</section>")
    return "\n".join(parts)
