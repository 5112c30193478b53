"""`runs/<study>/report.md`: the report as GitHub-flavoured Markdown.

The same content as report.html, with relative image links (`figures/*.png`, each arm's
`<arm>/linear/curves.png`). GitHub renders inline HTML, so every user string is escaped
for HTML (`<`, `>`, `&`, quotes become entities) and for Markdown (backslash before the
characters that format: backticks, `*`, `_`, `[`, `]`, `|` that would split a table cell...).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tempo_cli import atomic
from tempo_cli.study import figures
from tempo_cli.study import report_models as t

#: Characters Markdown may read as formatting anywhere in a line (or a table cell boundary,
#: or GitHub math); `<`, `>`, `&` become HTML entities. Line-start markers (`#`, `-`, `1.`)
#: never matter: user strings never start a line here.
_MD_SPECIAL = set("\\`*_{}[]|~$")


def md(s: Any) -> str:
    """A user string as literal Markdown text (safe inside a table cell, no HTML)."""
    out = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(s))
    return html.escape(out, quote=True).replace("\n", " ")


def write_markdown(study_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write `study_dir/report.md` from study.json's dict; returns its path."""
    study_dir = Path(study_dir)
    if "figures" not in data:
        figures.write_figures(study_dir, data)
    figs = {f["name"]: f for f in data.get("figures", [])}
    parts = [f"# Study {md(data.get('name', ''))}", _intro(data)]
    parts += [
        _accuracy(data.get("headline"), "Linear probe (headline)", figs.get("accuracy_vs_samples")),
        _lr(data.get("lr")),
        _accuracy(
            data.get("semisup"), "Semi-supervised fine-tuning", figs.get("semisup_vs_samples")
        ),
        _accuracy(data.get("knn"), "kNN", figs.get("knn_vs_samples")),
        _relevance(data.get("relevance")),
        _noise(data.get("noise"), figs.get("noise")),
        _lrp(data.get("lrp"), [f for f in data.get("figures", []) if f["name"].startswith("lrp_")]),
        _segment(data.get("segment")),
        _figures(data, figs.get("pretrain_loss")),
        _appendix(data),
    ]
    path = study_dir / "report.md"
    atomic.write_text(path, "\n\n".join(p for p in parts if p) + "\n")
    return path


def _cell(c: t.CellModel) -> str:
    text = md(c.text) + ("" if c.gain is None else f" ({t.fmt_gain(c.gain)})")
    text += f" ({md(c.note)})" if c.note else ""
    return f"**{text}**" if c.best else text


def _table(m: t.TableModel) -> str:
    """`m` as a GitHub table (every text through `md`)."""
    lines = ["| " + " | ".join(md(h) for h in m.header) + " |"]
    lines.append("|" + "|".join(["---"] * len(m.header)) + "|")
    lines += ["| " + " | ".join([md(r.head), *map(_cell, r.cells)]) + " |" for r in m.rows]
    return "\n".join(lines)


def _image(rel: str, title: str) -> str:
    return f"![{md(title)}]({quote(rel)})"


def _intro(data: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {md(v)}" for k, v in t.intro_items(data))


def _accuracy(table: dict[str, Any] | None, title: str, fig: dict[str, str] | None) -> str:
    if not table:
        return ""
    base = table.get("baseline")
    caption = (
        f"Final test accuracy, mean ± std over {md(table['over'])}; columns: labelled samples "
        "per class; **bold**: best per column"
        + (f"; (+x.x): gain in points over the baseline {md(base)}." if base else ".")
    )
    out = [f"## {title}", _table(t.accuracy_model(table, "")), caption]
    if fig:
        out.append(_image(fig["path"], fig["title"]))
    return "\n\n".join(out)


def _lr(view: dict[str, Any] | None) -> str:
    if not view:
        return ""
    order = [f"- {md(line)}" for line in t.lr_orders(view)]
    note = (
        "" if view["reference_lr"] is not None else "The reference lr 0.01 was not in the grid.\n\n"
    )
    return (
        "## Learning-rate robustness\n\n"
        + note
        + _table(t.lr_model(view))
        + "\n\nOrder of the arms, best first:\n\n"
        + "\n".join(order)
    )


def _relevance(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    return "## Relative relevance\n\n" + _table(t.relevance_model(table))


def _noise(table: dict[str, Any] | None, fig: dict[str, str] | None) -> str:
    if not table:
        return ""
    out = "## Accuracy under noise\n\n" + _table(t.noise_model(table))
    return out + (f"\n\n{_image(fig['path'], fig['title'])}" if fig else "")


def _lrp(table: dict[str, Any] | None, figs: list[dict[str, str]]) -> str:
    if not table:
        return ""
    out = "## LRP\n\n" + _table(t.lrp_model(table))
    return "\n\n".join([out, *(_image(f["path"], f["title"]) for f in figs)])


def _segment(table: dict[str, Any] | None) -> str:
    if not table:
        return ""
    return "## Segmentation\n\n" + _table(t.segment_model(table))


def _figures(data: dict[str, Any], loss: dict[str, str] | None) -> str:
    images = [_image(loss["path"], loss["title"])] if loss else []
    images += [
        _image(c["path"], f"Linear-probe curves: {c['arm']}") for c in data.get("curves", [])
    ]
    return "## Figures\n\n" + "\n\n".join(images) if images else ""


def _appendix(data: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    parts = [
        "## Appendix: settings and reproducibility",
        f"Versions: {md(versions)}. Device: {md(data.get('device'))}.",
        _table(t.stages_model(data)),
        "### Resolved study",
        _pre(json.dumps(data.get("study", {}), indent=1, default=str)),
    ]
    for arm, info in data.get("arms", {}).items():
        parts.append(f"### Arm {md(arm)} ({md(info.get('source'))})")
        for run in info.get("runs", []):
            for stage, s in run.get("stages", {}).items():
                settings = " ".join(
                    f"{k}={json.dumps(v, default=str)}" for k, v in s.get("config", {}).items()
                )
                parts.append(f"**{md(run['dir'])}/{md(stage)}**\n\n{_pre(settings)}")
    return "\n\n".join(parts)


def _pre(text: str) -> str:
    """A preformatted block as inline HTML (<pre> with escaped text): unlike a fenced code
    block, no backtick run in a user string can close it."""
    return f"<pre>{html.escape(text)}</pre>"
