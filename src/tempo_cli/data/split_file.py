"""`tempo data split ROOT --out FILE`: the split of labelled data, written as a manifest.

The manifest (`data/manifest.py`: path,label,split[,group], paths relative to FILE) is the
split tempo would use for ROOT with the same `--split-fractions`, `--split-seed` and
`--group-by`: keep it, edit it, share it, and pass it as `--data FILE` to get exactly that
split back. A run folder records the settings (config.json) and the counts (metrics.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tempo_cli.data.labelled_data import LabelledData, open_labelled
from tempo_cli.data.manifest import write_manifest
from tempo_cli.data.near_copies import check_and_warn
from tempo_cli.report.progress import log
from tempo_cli.settings.data import DataSplitSettings


def summary_lines(data: LabelledData) -> list[str]:
    """One line per split: images, classes (and groups) in it; then how it was made."""
    entries = data.entries()
    lines = []
    for split in data.splits():
        members = [e for e in entries if e.split == split]
        groups = {e.group for e in members if e.group is not None}
        text = f"{split}: {len(members)} images, {len({e.label for e in members})} classes"
        lines.append(text + (f", {len(groups)} groups" if groups else ""))
    how = data.how
    if how == "seeded":
        o = data.options
        how += f" (fractions {','.join(f'{f:g}' for f in o.fractions)}, seed {o.seed}"
        how += f", --group-by {o.group_by!r})" if o.group_by else ")"
    lines.append(f"split: {how}; {data.form} {data.source}")
    return lines


def run_data_split(settings: DataSplitSettings) -> dict[str, Any]:
    """Check the data, make (or read) its split and write it as a manifest."""
    from tempo_cli.report.run_dir import RunDir

    data = open_labelled(settings.root, settings.split_options(), option="ROOT")
    out = Path(settings.out).expanduser()
    rows = data.manifest_rows(out.parent)
    run = RunDir(settings)
    run.save_config(settings)
    write_manifest(out, rows)
    copies = check_and_warn(data)
    metrics = run.update_metrics(data=data.describe(), manifest=str(out), near_copies=copies)
    run.close()
    for line in summary_lines(data):
        log(line, settings.quiet)
    log(f"wrote {out} ({len(rows)} images)", settings.quiet)
    return {"path": str(metrics), **run.metrics}
