"""`--bn-stats running|batch|adapt` on the 120 real ASL photos of ../shared/data/asl-sample.

Builds a labelled root from its `test/<letter>/` folders (the first 2 photos of each letter,
sorted by name, as `train/`, the other 3 as `test/`) and runs `tempo eval linear` and
`tempo eval knn` with a ResNet-34 without ImageNet weights (`--path random`, none can be
downloaded offline) at 128 px for each mode; prints final test accuracy (chance 0.042).

    python benchmarks/bn_stats_asl_sample.py [--sample ../shared/data/asl-sample]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("running", "batch", "adapt")
REPO = Path(__file__).resolve().parents[1]


def build_root(sample: Path, root: Path) -> None:
    for letter in sorted(p for p in (sample / "test").iterdir() if p.is_dir()):
        photos = sorted(letter.iterdir())
        for split, chosen in (("train", photos[:2]), ("test", photos[2:])):
            (root / split / letter.name).mkdir(parents=True, exist_ok=True)
            for p in chosen:
                shutil.copy2(p, root / split / letter.name / p.name)


def accuracy(protocol: str, mode: str, root: Path, work: Path) -> str:
    name = f"{protocol}-{mode}"
    cmd = [sys.executable, "-m", "tempo_cli", "eval", protocol, "--path", "random"]
    cmd += ["--backbone", "resnet34", "--data", str(root), "--bn-stats", mode]
    cmd += ["--image-size", "128", "--device", "cpu", "--quiet", "--name", name]
    env = dict(os.environ, TEMPO_RUNS_DIR=str(work / "runs"), TEMPO_CACHE_DIR=str(work / "cache"))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    record = json.loads((work / "runs" / name / "metrics.json").read_text())["results"][0]
    mean, std = record.get("accuracy_final_mean"), record.get("accuracy_final_std")
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=REPO.parent / "shared/data/asl-sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_root(args.sample, work / "asl-2-3")
        print(f"{'mode':8}  {'linear':>15}  {'knn':>15}")
        for mode in MODES:
            lin = accuracy("linear", mode, work / "asl-2-3", work)
            knn = accuracy("knn", mode, work / "asl-2-3", work)
            print(f"{mode:8}  {lin:>15}  {knn:>15}")


if __name__ == "__main__":
    main()
