"""Where a finished study's time went, and whether another run of it has the same numbers.

    python benchmarks/study_split.py runs/demo [--against OTHER/runs/demo]

Prints each stage's seconds summed over the arms (stage.json `seconds`, as study.json
`stages` holds them), the pre-trainings' share and the share of the other stages (with and
without `embed`, which the demo's time goal leaves out). With `--against`, compares the two
study.json files with every timing dropped (`tempo_cli.study.collect.without_timings`) and
each run's folder above `runs/` replaced (so runs made with TEMPO_DATA_DIR, TEMPO_CACHE_DIR
and TEMPO_RUNS_DIR side by side in one folder each compare): one line per top-level key,
`equal` or its differences (the first 15).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Stages whose time is pre-training; and the one the demo's goal does not count.
PRETRAIN, NOT_COUNTED = "pretrain", "embed"


def stage_seconds(study_dir: Path) -> dict[str, float]:
    """Seconds per stage name, summed over arms and repeats (study.json `stages`: each
    stage.json's `seconds`, as the study collected them)."""
    data = json.loads((study_dir / "study.json").read_text(encoding="utf-8"))
    totals: dict[str, float] = {}
    for row in data["stages"]:
        totals[row["stage"]] = totals.get(row["stage"], 0.0) + float(row["seconds"] or 0)
    return totals


def differences(a: Any, b: Any, path: str, out: list[str]) -> None:
    if type(a) is not type(b):
        out.append(f"{path}: {str(a)[:70]} != {str(b)[:70]}")
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k in a and k in b:
                differences(a[k], b[k], f"{path}.{k}", out)
            else:
                out.append(f"{path}.{k}: only in {'the first' if k in a else '--against'}")
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items against {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):  # extra items: said above
            differences(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {str(a)[:70]} != {str(b)[:70]}")


def compare(first: Path, other: Path) -> None:
    from tempo_cli.study.collect import without_timings

    def load(d: Path) -> dict[str, Any]:
        data = json.loads((d / "study.json").read_text(encoding="utf-8"))
        return without_timings(data, str(d.resolve().parent.parent))

    a, b = load(first), load(other)
    for key in sorted(set(a) | set(b)):
        out: list[str] = []
        differences(a.get(key), b.get(key), key, out)
        print(f"{key}: " + ("equal" if not out else f"{len(out)} differences"))
        for line in out[:15]:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--against", type=Path, default=None)
    args = parser.parse_args()
    totals = stage_seconds(args.study_dir)
    total = sum(totals.values())
    counted = total - totals.get(NOT_COUNTED, 0.0)
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{name:12s} {seconds:8.1f} s  {seconds / total:6.1%}")
    others = counted - totals.get(PRETRAIN, 0.0)
    with_it = (total - totals.get(PRETRAIN, 0.0)) / total
    print(f"{'total':12s} {total:8.1f} s")
    print(f"stages other than pretrain: {others:.1f} of {counted:.1f} s = {others / counted:.1%}"
          f" ({NOT_COUNTED} not counted; {with_it:.1%} with it)")  # fmt: skip
    if args.against is not None:
        compare(args.study_dir, args.against)


if __name__ == "__main__":
    main()
