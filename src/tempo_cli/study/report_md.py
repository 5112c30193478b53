"""`runs/<study>/report.md`: the report as GitHub-flavoured Markdown.

The same content as report.html, with relative image links (`figures/*.png`, each arm's
`<arm>/linear/curves.png`). GitHub renders inline HTML, so every user string is escaped
for HTML (`<`, `>`, `&`, quotes become entities) and for Markdown (backslash before the
characters that format: backticks, `*`, `_`, `[`, `]`, `|` that would split a table cell...).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tempo_cli import atomic
from tempo_cli.study import report_models as t
from tempo_cli.study.intervals import headline_verdicts
from tempo_cli.study.sections import SECTIONS, Figure, Section

#: Characters Markdown may read as formatting anywhere in a line (or a table cell boundary,
#: or GitHub math); `<`, `>`, `&` become HTML entities. Line-start markers (`#`, `-`, `1.`)
#: never matter: user strings never start a line here.
_MD_SPECIAL = set("\\`*_{}[]|~$")


def md(s: Any) -> str:
    """A user string as literal Markdown text (safe inside a table cell, no HTML)."""
    out = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(s))
    return html.escape(out, quote=True).replace("\n", " ")


def write_markdown(
    study_dir: str | Path, data: dict[str, Any], figs: dict[str, list[Figure]]
) -> Path:
    """Write `study_dir/report.md` from study.json's dict and the sections' figures
    (sections.draw_figures); returns its path."""
    study_dir = Path(study_dir)
    verdicts = "\n\n".join(f"**{md(v)}**" for v in headline_verdicts(data))
    parts = [f"# Study {md(data.get('name', ''))}", verdicts, _intro(data)]
    parts += [_section(sec, data.get(sec.key), figs.get(sec.key, [])) for sec in SECTIONS]
    parts.append(_appendix(data))
    path = study_dir / "report.md"
    atomic.write_text(path, "\n\n".join(p for p in parts if p) + "\n")
    return path


def _section(sec: Section, table: dict[str, Any] | None, figs: list[Figure]) -> str:
    """One section: notes, table, caption and listing (when study.json has its table), then
    its figures; "" when it has neither."""
    parts = []
    if table and sec.view is not None:
        model = sec.view(table)
        parts += [md(note) for note in model.notes]
        parts += [_table(model), md(model.caption)]
        if model.listing:
            title, items = model.listing
            parts += [md(title), "\n".join(f"- {md(item)}" for item in items)]
    parts += [_image(fig["path"], fig["title"]) for fig in figs]
    if not any(parts):
        return ""
    return "\n\n".join([f"## {md(sec.title)}", *(p for p in parts if p)])


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


def _appendix(data: dict[str, Any]) -> str:
    m = t.appendix_model(data)
    parts = [
        "## Appendix: settings and reproducibility",
        md(m.facts),
        _table(t.stages_model(data)),
        "### Resolved study",
        _pre(m.study),
    ]
    for arm, source, stages in m.arms:
        parts.append(f"### Arm {md(arm)} ({md(source)})")
        parts += [f"**{md(s)}**\n\n{_pre(text)}" for s, text in stages]
    return "\n\n".join(parts)


def _pre(text: str) -> str:
    """A preformatted block as inline HTML (<pre> with escaped text): unlike a fenced code
    block, no backtick run in a user string can close it."""
    return f"<pre>{html.escape(text)}</pre>"
