"""Linear evaluation speed: the reference's loop vs tempo's batched probe, side by side.

Part 1 (protocol): the same cached features; the reference's per-iteration loop
(`tempo_cli.evaluate.reference`: one run at a time, Python loop over cached batches, test
accuracy every iteration by a loop over test batches of 10) vs `train_linear_probes`
(all runs at once). Prints both times, the ratio and both final accuracies.

Part 2 (end to end, each in a fresh process, process start included):
- reference style: a script doing what the reference's `linear_eval.py` does — load the
  model, per run recompute the train/test features through DataLoaders (Resize, ToTensor,
  Normalize; train batches of 24 shuffled, test batches of 10; backbone in train mode),
  then the per-iteration loop, and the mean curve to TensorBoard;
- `tempo eval linear` cold (empty feature cache: images decoded, features computed);
- `tempo eval linear` warm (second run: features from the cache).

Images: 120 train + 120 test at 128 px. Default: the real photos of
../shared/data/asl-sample (its test folder used as both splits), resnet34 random init.

    python benchmarks/linear_eval_speed.py                 # full protocol: 10 runs x 3000
    python benchmarks/linear_eval_speed.py --iterations 500 --skip-e2e   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sample_root(tmp: Path, sample: Path) -> Path:
    """A dataset root whose train/ and test/ are both the sample's 120 photos."""
    root = tmp / "asl-bench"
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        link = root / split
        if not link.exists():
            link.symlink_to(sample / "test", target_is_directory=True)
    return root


# --------------------------------------------------------------------------- reference e2e


def reference_end_to_end(root: Path, arch: str, runs: int, iterations: int, out: Path) -> None:
    """The reference's linear_eval.py main(), CPU instead of .cuda(), on `root`."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torch.utils.tensorboard import SummaryWriter
    from torchvision import transforms as T

    from tempo_cli.data.labelled import ASL_LETTERS
    from tempo_cli.evaluate.reference import _test_model
    from tempo_cli.models.backbones import build_resnet

    class Folder(Dataset):
        def __init__(self, split: str) -> None:
            self.items = [
                (p, ASL_LETTERS.index(d.name))
                for d in sorted((root / split).iterdir())
                for p in sorted(d.glob("*.png"))
            ]
            self.tf = T.Compose(
                [
                    T.Resize(128),
                    T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                ]
            )

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, k: int):
            p, y = self.items[k]
            return self.tf(Image.open(p).convert("RGB")), y

    device = "cpu"
    train_loader = DataLoader(Folder("train"), batch_size=24, shuffle=True)
    test_loader = DataLoader(Folder("test"), batch_size=10)
    resnet = build_resnet(arch)  # random init; the reference loads its checkpoint here
    model = nn.Module()
    model.backbone = nn.Sequential(*list(resnet.children())[:-1]).to(device)

    def linear_eval():
        model.linear = nn.Linear(512, 24).to(device)
        reps, test_reps = [], []
        with torch.no_grad():  # backbone never put in eval mode: batch statistics
            for x, y in train_loader:
                reps.append((torch.flatten(model.backbone(x.to(device)), 1), y.to(device)))
            for x, y in test_loader:
                test_reps.append((torch.flatten(model.backbone(x.to(device)), 1), y.to(device)))
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.linear.parameters(), lr=0.01, weight_decay=0.0001)
        errors, iters_ = [], []
        i, done = 0, False
        while not done:
            for rep, label in reps:
                errors.append(_test_model(model.linear, test_reps, len(test_loader.dataset)))
                iters_.append(i)
                if i == iterations:
                    done = True
                    break
                labels = nn.functional.one_hot(label, num_classes=24).float()
                optimizer.zero_grad()
                loss = criterion(model.linear(rep), labels)
                loss.backward()
                optimizer.step()
                loss.item()
                i += 1
        return np.array(errors), np.array(iters_)

    e = []
    iters = None
    for _ in range(runs):
        errors, iters = linear_eval()
        e.append(errors.reshape(1, -1))
    e = np.concatenate(e, axis=0)
    writer = SummaryWriter(str(out / "tb"))
    for k, v in enumerate(e.mean(axis=0)):
        writer.add_scalar("accuracy", float(v), int(iters[k]))
    writer.close()
    (out / "final.json").write_text(json.dumps({"final_mean": float(e[:, -1].mean())}))


# --------------------------------------------------------------------------- parts


def protocol_part(root: Path, arch: str, runs: int, iterations: int, ref_runs: int) -> dict:
    import torch

    from tempo_cli.evaluate.config import ProbeConfig
    from tempo_cli.evaluate.features import FeatureRecipe, compute_split_features
    from tempo_cli.evaluate.linear_probe import train_linear_probes
    from tempo_cli.evaluate.reference import reference_linear_eval
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.settings.evaluate import EvalLinearSettings

    torch.manual_seed(0)
    net = build_resnet(arch)
    # batch-statistics features, as the reference computes them (a random-init network in
    # eval mode gives near-constant features, whose probe sits at chance for both loops)
    recipe = FeatureRecipe(image_size=128, bn_stats="batch", seed=0)
    train = compute_split_features(net, root, "train", recipe)
    test = compute_split_features(net, root, "test", recipe)
    args = (train.features, train.labels, test.features, test.labels, 24)
    # the `tempo eval linear` protocol (batches of 24, lr 0.01, weight decay 1e-4), seed 0
    config = ProbeConfig.default(EvalLinearSettings, runs=runs, iterations=iterations, seed=0)

    t0 = time.perf_counter()
    accs = [reference_linear_eval(*args, config, run=r)[0] for r in range(ref_runs)]
    t_ref = (time.perf_counter() - t0) * runs / ref_runs
    ref_final = sum(float(a[-1]) for a in accs) / ref_runs

    t0 = time.perf_counter()
    res = train_linear_probes(*args, config)
    t_ours = time.perf_counter() - t0
    ours_final = float(res.accuracy[:ref_runs, -1].mean())
    return {
        "reference_s": t_ref,
        "reference_runs_timed": ref_runs,
        "ours_s": t_ours,
        "ratio": t_ref / t_ours,
        "reference_final_mean": ref_final,
        "ours_final_mean_same_runs": ours_final,
        "ours_final_mean_all_runs": float(res.accuracy[:, -1].mean()),
    }


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def end_to_end_part(root: Path, tmp: Path, arch: str, runs: int, iterations: int) -> dict:
    env = dict(os.environ)
    env.update(
        TEMPO_CACHE_DIR=str(tmp / "cache"),
        TEMPO_RUNS_DIR=str(tmp / "runs"),
        TEMPO_DATA_DIR=str(tmp / "data"),
        TEMPO_MODEL_DIR=str(tmp / "models"),
    )
    tempo = [sys.executable, "-m", "tempo_cli"]
    common = [
        "eval",
        "linear",
        "--path",
        "random",
        "--backbone",
        arch,
        "--data",
        str(root),
        "--runs",
        str(runs),
        "--iterations",
        str(iterations),
        "--image-size",
        "128",
        "--device",
        "cpu",
        "--quiet",
    ]
    ref_out = tmp / "ref"
    ref_out.mkdir(exist_ok=True)
    t_ref = _timed(
        [
            sys.executable,
            __file__,
            "--reference-e2e",
            str(root),
            "--arch",
            arch,
            "--runs",
            str(runs),
            "--iterations",
            str(iterations),
            "--out",
            str(ref_out),
        ],
        env,
    )
    t_cold = _timed([*tempo, *common, "--name", "cold"], env)
    t_warm = _timed([*tempo, *common, "--name", "warm"], env)
    ours = json.loads((tmp / "runs" / "cold" / "metrics.json").read_text())["results"][0]
    ref = json.loads((ref_out / "final.json").read_text())
    return {
        "reference_e2e_s": t_ref,
        "ours_cold_s": t_cold,
        "ours_warm_s": t_warm,
        "ratio_cold": t_ref / t_cold,
        "ratio_warm": t_ref / t_warm,
        "reference_final_mean (batch-stat features)": ref["final_mean"],
        "ours_final_mean (running-stat features)": ours["accuracy_final_mean"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sample",
        type=Path,
        default=Path(
            os.environ.get("TEMPO_ASL_SAMPLE", REPO.parent / "shared" / "data" / "asl-sample")
        ),
    )
    ap.add_argument("--arch", default="resnet34")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument(
        "--ref-runs",
        type=int,
        default=None,
        help="time only this many reference runs in part 1 and scale (default: all)",
    )
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--reference-e2e", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.reference_e2e is not None:
        reference_end_to_end(a.reference_e2e, a.arch, a.runs, a.iterations, a.out)
        return

    import torch

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{a.runs} runs x {a.iterations} iterations, {a.arch}, 120 train + 120 test at 128 px"
    )
    with tempfile.TemporaryDirectory(prefix="tempo-bench-") as d:
        tmp = Path(d)
        root = _sample_root(tmp, a.sample)
        p = protocol_part(root, a.arch, a.runs, a.iterations, a.ref_runs or a.runs)
        print("\n[protocol part: same cached features]")
        print(
            f"  reference loop : {p['reference_s']:8.2f} s   "
            f"final acc {p['reference_final_mean']:.4f}"
            f"  ({p['reference_runs_timed']} runs timed)"
        )
        print(
            f"  batched probe  : {p['ours_s']:8.2f} s   "
            f"final acc {p['ours_final_mean_same_runs']:.4f}"
            f"  (same runs; all runs {p['ours_final_mean_all_runs']:.4f})"
        )
        print(f"  speed-up       : {p['ratio']:8.1f} x")
        if not a.skip_e2e:
            e = end_to_end_part(root, tmp, a.arch, a.runs, a.iterations)
            print("\n[end to end: fresh processes, start-up included]")
            print(
                f"  reference style          : {e['reference_e2e_s']:8.2f} s   final acc "
                f"{e['reference_final_mean (batch-stat features)']:.4f} (batch-stat features)"
            )
            print(
                f"  tempo eval linear (cold) : {e['ours_cold_s']:8.2f} s   final acc "
                f"{e['ours_final_mean (running-stat features)']:.4f} (running-stat features)"
            )
            print(f"  tempo eval linear (warm) : {e['ours_warm_s']:8.2f} s")
            print(f"  speed-up cold            : {e['ratio_cold']:8.1f} x")
            print(f"  speed-up warm            : {e['ratio_warm']:8.1f} x")


if __name__ == "__main__":
    main()
