"""The report's sections, one list: what each study.json table is, how the report shows it.

A `Section` is one key of study.json that the report shows: `build` makes its table from
the stage folders (collect.py calls it), `view` turns that table into the table model both
reports and the terminal headline format (report_models.py: texts, caption, notes), and
`figures` draws its figures (figures.py) once, before either report is written. Both
reports loop over `SECTIONS` in order; a section without data is left out.

Adding a section = one `Section` entry here (a builder in report_tables.py, a view in
report_models.py, a figure in figures.py where it has one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempo_cli.study import figures as f
from tempo_cli.study import report_models as m
from tempo_cli.study import report_tables as t

#: A drawn (or referenced) figure: {name, title, path relative to the study folder}.
Figure = dict[str, str]
Figures = Callable[[Path, dict[str, Any]], list[Figure]]


def _no_figures(study_dir: Path, data: dict[str, Any]) -> list[Figure]:
    return []


@dataclass(frozen=True)
class Section:
    """One section of the report (and one key of study.json)."""

    key: str
    title: str
    #: (loaded stage folders, baseline arm or None) -> the study.json table, None: no data.
    build: Callable[[t.Loaded, str | None], dict[str, Any] | None]
    #: The table shown (None: the section only has figures).
    view: Callable[[dict[str, Any]], m.TableModel] | None = None
    #: (study folder, study.json's dict) -> the section's figures, drawn now.
    figures: Figures = _no_figures


def _accuracy(key: str, stage: str, title: str, figure: str, figure_title: str) -> Section:
    """A table of rows = arms, columns = samples per class (the headline's shape)."""

    def draw(study_dir: Path, data: dict[str, Any]) -> list[Figure]:
        table = data.get(key)
        return [f.accuracy_figure(study_dir, table, figure, figure_title)] if table else []

    return Section(
        key,
        title,
        lambda loaded, baseline: t.accuracy_table(stage, loaded, baseline),
        lambda table: m.accuracy_model(table, key),
        draw,
    )


def _one(key: str, draw: Callable[[Path, dict[str, Any]], Figure]) -> Figures:
    """The figure `draw` makes of table `key`, when study.json has that table."""
    return lambda study_dir, data: [draw(study_dir, data[key])] if data.get(key) else []


def _pretrain_figures(study_dir: Path, data: dict[str, Any]) -> list[Figure]:
    """The pre-training loss and each arm's probe curves (drawn by the linear stage)."""
    loss = [f.loss_figure(study_dir, data["pretrain"])] if data.get("pretrain") else []
    curves = [
        {"name": "curves", "title": f"Linear-probe curves: {c['arm']}", "path": c["path"]}
        for c in data.get("curves", [])
    ]
    return loss + curves


#: The report's sections, in the order both reports show them.
SECTIONS: tuple[Section, ...] = (
    _accuracy("headline", "linear", "Linear probe (headline)", "accuracy_vs_samples",
              "Linear-probe accuracy vs labelled samples per class"),
    Section("data", "Data", lambda loaded, _: t.data_table(loaded), m.data_model),
    Section("lr", "Learning-rate robustness", lambda loaded, _: t.lr_view(loaded), m.lr_model),
    _accuracy("semisup", "semisup", "Semi-supervised fine-tuning", "semisup_vs_samples",
              "Semi-supervised accuracy vs samples per class"),
    _accuracy("knn", "knn", "kNN", "knn_vs_samples", "kNN accuracy vs labelled samples per class"),
    Section("embed", "What the features learned", lambda loaded, _: t.embed_table(loaded),
            m.embed_model, lambda study_dir, data: f.embed_figures(study_dir, data["embed"])
            if data.get("embed") else []),
    Section("monitor", "What the features learned: the pre-training monitor",
            lambda loaded, _: t.monitor_table(loaded), figures=_one("monitor", f.monitor_figure)),
    Section("relevance", "Relative relevance", lambda loaded, _: t.relevance_table(loaded),
            m.relevance_model),
    Section("noise", "Accuracy under noise", lambda loaded, _: t.noise_table(loaded),
            m.noise_model, _one("noise", f.noise_figure)),
    Section("lrp", "LRP", lambda loaded, _: t.lrp_table(loaded), m.lrp_model,
            lambda study_dir, data: f.lrp_figures(study_dir, data["lrp"]) if data.get("lrp")
            else []),
    Section("segment", "Segmentation", lambda loaded, _: t.segment_table(loaded),
            m.segment_model),
    Section("pretrain", "Figures", lambda loaded, _: t.pretrain_table(loaded),
            figures=_pretrain_figures),
)  # fmt: skip


def draw_figures(study_dir: str | Path, data: dict[str, Any]) -> dict[str, list[Figure]]:
    """Every section's figures, drawn into `study_dir/figures/` (once, before the reports)."""
    return {s.key: s.figures(Path(study_dir), data) for s in SECTIONS}


def section(key: str) -> Section:
    """The section `key` of SECTIONS."""
    return next(s for s in SECTIONS if s.key == key)
