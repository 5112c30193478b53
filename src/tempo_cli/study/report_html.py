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
from tempo_cli.study import report_tables as t

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
    study = data.get("study", {})
    items = [
        ("origin", study.get("origin")),
        ("description", study.get("description")),
        ("pre-training data", study.get("data")),
        ("labelled data", study.get("labelled")),
        ("backbone", study.get("backbone")),
        ("image size", study.get("image_size")),
        ("baseline", study.get("baseline")),
        ("device", data.get("device")),
    ]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td class='arm'>{escape(str(v))}</td></tr>"
        for k, v in items
        if v not in (None, "")
    )
    return f"<table class='intro'>{rows}</table>"


def _cell_attrs(table: str, arm: str, col: str, cell: dict[str, Any] | None) -> str:
    attrs = {"data-table": table, "data-arm": arm, "data-col": col}
    if cell:
        attrs.update({"data-mean": repr(cell["mean"]), "data-n": str(cell.get("n"))})
        if cell.get("std") is not None:
            attrs["data-std"] = repr(cell["std"])
    return "".join(f' {k}="{escape(v)}"' for k, v in attrs.items())


def _accuracy_section(table: dict[str, Any] | None, title: str, key: str) -> str:
    """A table of rows = arms, columns = samples per class, cells mean ± std + gain."""
    if not table:
        return ""
    cols = table["columns"]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    rows = []
    for row in table["rows"]:
        arm = row["arm"]
        tds = []
        for col in cols:
            cell = row["cells"].get(col)
            best = arm in table["best"].get(col, [])
            attrs = _cell_attrs(key, arm, col, cell)
            gain = row["gains"].get(col)
            text = escape(t.fmt_cell(cell))
            if gain is not None and arm != table["baseline"]:
                attrs += f' data-gain="{escape(repr(gain))}"'
                cls = "gain neg" if gain < 0 else "gain"
                text += f"<span class='{cls}'>{escape(t.fmt_gain(gain))} pts</span>"
            tds.append(f"<td class='cell{' best' if best else ''}'{attrs}>{text}</td>")
        rows.append(f"<tr><td class='arm'>{escape(arm)}</td>{''.join(tds)}</tr>")
    base = table.get("baseline")
    caption = (
        f"Final test accuracy, mean ± std over {escape(table['over'])}. "
        "Columns: labelled samples per class. Bold: best per column. "
        + (f"Under each cell: the gain in points over the baseline {escape(base)}." if base else "")
    )
    return (
        f"<section id='{key}'><h2>{escape(title)}</h2><table data-table='{key}'>"
        f"<caption>{caption}</caption>"
        f"<thead><tr><th>arm</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _lr_section(view: dict[str, Any] | None) -> str:
    """Each arm at the reference lr and at the chosen lr, with the arm order per column."""
    if not view:
        return ""
    ref = view["reference_lr"]
    cols = view["columns"]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    rows = []
    for row in view["rows"]:
        for kind in ("reference", "chosen"):
            if kind == "reference" and ref is None:
                continue
            label = (
                f"lr {t.fmt_lr(ref)}" if kind == "reference" else f"chosen on {row['selected_on']}"
            )
            tds = []
            for col in cols:
                cell = (row["cells"].get(col) or {}).get(kind)
                lr = (
                    f" <span class='muted'>(lr {escape(t.fmt_lr(cell.get('lr')))})</span>"
                    if (kind == "chosen" and cell and cell.get("lr") is not None)
                    else ""
                )
                attrs = _cell_attrs(f"lr-{kind}", row["arm"], col, cell)
                tds.append(f"<td{attrs}>{escape(t.fmt_cell(cell))}{lr}</td>")
            head_td = f"<td class='arm'>{escape(row['arm'])} · {escape(label)}</td>"
            rows.append(f"<tr>{head_td}{''.join(tds)}</tr>")
    order = "".join(f"<li>{escape(col)}: " + _orders(view["order"][col]) + "</li>" for col in cols)
    note = "" if ref is not None else "<p>The reference lr 0.01 was not in the grid.</p>"
    return (
        "<section id='lr'><h2>Learning-rate robustness</h2>" + note + "<table data-table='lr'>"
        "<caption>Linear probe at the reference lr and at the lr chosen on val (or on test, "
        "marked).</caption>"
        f"<thead><tr><th>arm · lr</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table><p>Order of the arms, best first:</p><ul>" + order + "</ul></section>"
    )


def _orders(order: dict[str, Any]) -> str:
    parts = []
    for kind in ("reference", "chosen"):
        if order.get(kind) is not None:
            parts.append(f"{kind}: " + escape(" > ".join(order[kind])))
    return "; ".join(parts)


def _simple_table(key: str, head: list[str], rows: list[list[str]], caption: str) -> str:
    """A table whose cells are ready HTML (first column = the arm, escaped by the caller)."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + f"<td class='arm'>{r[0]}</td>" + "".join(f"<td>{c}</td>" for c in r[1:]) + "</tr>"
        for r in rows
    )
    return (
        f"<table data-table='{key}'><caption>{caption}</caption>"
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    )


def _value_td(key: str, arm: str, col: str, cell: dict[str, Any] | None) -> str:
    """A <td> body with attributes: the cell's text, attributes carried in a span."""
    return f"<span{_cell_attrs(key, arm, col, cell)}>{escape(t.fmt_cell(cell))}</span>"


def _relevance_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    rows = []
    for r in table["rows"]:
        if "skipped" in r:
            rows.append(
                [
                    escape(r["arm"]),
                    f"<span class='muted'>skipped: {escape(str(r['skipped']))}</span>",
                    "",
                ]
            )
        else:
            cell = {"mean": r["rr_mean"], "std": r["rr_std"], "n": r["n"]}
            rows.append(
                [escape(r["arm"]), _value_td("relevance", r["arm"], "rr", cell), escape(r["over"])]
            )
    cap = "Relative relevance inside the hand masks (share of positive LRP relevance), mean ± std."
    return (
        "<section id='relevance'><h2>Relative relevance</h2>"
        + _simple_table("relevance", ["arm", "relative relevance", "± over"], rows, cap)
        + "</section>"
    )


def _noise_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    levels = table["levels"]
    rows = [
        [escape(r["arm"])]
        + [_value_td("noise", r["arm"], lv, r["accuracy"].get(lv)) for lv in levels]
        for r in table["rows"]
    ]
    return (
        "<section id='noise'><h2>Accuracy under noise</h2>"
        + _simple_table("noise", ["arm", *levels], rows, "Test accuracy per Gaussian noise level.")
        + "</section>"
    )


def _lrp_section(table: dict[str, Any] | None, figs: str) -> str:
    if not table:
        return ""
    rows = [
        [escape(r["arm"]), _value_td("lrp", r["arm"], "accuracy", r["accuracy"])]
        for r in table["rows"]
    ]
    cap = "Test accuracy of each arm's classifier explained by LRP."
    return (
        "<section id='lrp'><h2>LRP</h2>"
        + _simple_table("lrp", ["arm", "classifier accuracy"], rows, cap)
        + figs
        + "</section>"
    )


def _segment_section(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    keys = ("segm_AP", "bbox_AP", "iterations_to_90pct_final_segm_AP")
    rows = []
    for r in table["rows"]:
        cells = [_value_td("segment", r["arm"], k, r.get(k)) for k in keys[:2]]
        it = r.get(keys[2])
        cells.append(
            f"<span{_cell_attrs('segment', r['arm'], keys[2], it)}>"
            + ("–" if not it else escape(f"{it['mean']:g}"))
            + "</span>"
        )
        rows.append([escape(r["arm"]), *cells])
    cap = (
        "Mask R-CNN: final AP and the first evaluated iteration reaching 90% of the final segm AP."
    )
    return (
        "<section id='segment'><h2>Segmentation</h2>"
        + _simple_table(
            "segment", ["arm", "segm AP", "bbox AP", "iterations to 90% segm AP"], rows, cap
        )
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
    times = [
        [
            escape(r["arm"]),
            escape("" if r["repeat"] is None else str(r["repeat"])),
            escape(r["stage"]),
            escape(t.fmt_seconds(r.get("seconds")))
            + (
                f" <span class='muted'>(skipped: {escape(str(r['skipped']))})</span>"
                if r.get("skipped")
                else ""
            ),
        ]
        for r in data.get("stages", [])
    ]
    parts = [
        "<section id='appendix'><h2>Appendix: settings and reproducibility</h2>",
        f"<p>Versions: {escape(versions)}. Device: {escape(str(data.get('device')))}.</p>",
        _simple_table(
            "stages", ["arm", "repeat", "stage", "wall time"], times, "Wall time per stage."
        ),
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
