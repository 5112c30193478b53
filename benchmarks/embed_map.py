"""Which 2-D map `tempo embed --map` draws: tempo's exact t-SNE against scikit-learn's
t-SNE and UMAP, timed and scored on the same features.

    python benchmarks/embed_map.py runs/<embed>/<checkpoint>.npz [...] [--concat]
        [--methods tempo-tsne,sklearn-tsne,umap] [--rounds 2]

Each `.npz` is one `tempo embed` output (features, labels); `--concat` maps them as one set
(e.g. the demo's train, val and test embedded by three runs). Every method runs in a fresh
Python process, so "cold" is what one `tempo embed --map` would pay: importing the library,
numba's compilation for UMAP, and one map; "warm" is the best of `--rounds` further maps in
that process. Quality, on the L2-normalised features every method is given:

- trust@10: trustworthiness (Venna and Kaski): 1 when no map neighbour of a point is far
  from it in feature space (cosine distance); what a reader of a map must rely on.
- map kNN@5: the share of each point's 5 nearest map neighbours with its class (how well
  the picture shows the classes the features separate; compare it with the features' own
  class agreement in metrics.json).

tempo's t-SNE needs only numpy; sklearn and umap are measured where importable (run the
script with a Python that has them, PYTHONPATH=src for tempo's). Prints one row per method.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("tempo-tsne", "sklearn-tsne", "umap")


def load(paths: list[str], concat: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sets = []
    for p in paths:
        with np.load(p, allow_pickle=False) as f:
            sets.append((Path(p).parent.name + "/" + Path(p).stem, f["features"], f["labels"]))
    if concat:
        name = "+".join(s[0] for s in sets)
        return [(name, np.concatenate([s[1] for s in sets]), np.concatenate([s[2] for s in sets]))]
    return sets


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def trustworthiness(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Venna and Kaski's trustworthiness of map y (n, 2) of x (n, d), k neighbours."""
    n = len(x)
    dx = _sq(x)
    dy = _sq(y.astype(np.float64))
    np.fill_diagonal(dx, np.inf)
    np.fill_diagonal(dy, np.inf)
    rank = np.empty((n, n), np.int64)  # rank[i, j]: j's rank among i's feature neighbours
    order = np.argsort(dx, axis=1)
    rank[np.arange(n)[:, None], order] = np.arange(1, n + 1)[None, :]
    map_nn = np.argsort(dy, axis=1)[:, :k]
    penalty = np.maximum(rank[np.arange(n)[:, None], map_nn] - k, 0).sum()
    return float(1 - 2.0 / (n * k * (2 * n - 3 * k - 1)) * penalty)


def _sq(a: np.ndarray) -> np.ndarray:
    s = (a * a).sum(1)
    return np.maximum(s[:, None] + s[None, :] - 2 * a @ a.T, 0.0)


def map_knn(y: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    d = _sq(y.astype(np.float64))
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


def fit(method: str, x: np.ndarray, seed: int) -> np.ndarray:
    if method == "tempo-tsne":
        from tempo_cli.embed.tsne import tsne

        return tsne(x)
    if method == "sklearn-tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(method)


def child(method: str, paths: list[str], concat: bool, rounds: int) -> None:
    """One method in this fresh process: cold (import + first map), then warm maps."""
    t0 = time.perf_counter()
    results = []
    for name, feats, labels in load(paths, concat):
        x = normalise(feats.astype(np.float64))
        start = time.perf_counter()
        y = fit(method, x, 0)
        cold = time.perf_counter() - (t0 if not results else start)
        warm = min(_timed(method, x) for _ in range(rounds)) if rounds else float("nan")
        results.append(
            {
                "data": name,
                "n": len(x),
                "cold_s": cold,
                "warm_s": warm,
                "trust10": trustworthiness(x, y),
                "map_knn5": map_knn(y, labels),
            }  # fmt: skip
        )
    print(json.dumps(results))


def _timed(method: str, x: np.ndarray) -> float:
    t = time.perf_counter()
    fit(method, x, 0)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("npz", nargs="+")
    p.add_argument("--concat", action="store_true")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.npz, args.concat, args.rounds)
        return
    print(f"{'method':<13} {'data':<40} {'n':>5} {'cold s':>8} {'warm s':>8} "
          f"{'trust@10':>9} {'map kNN@5':>9}")  # fmt: skip
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, *args.npz, "--child", method, "--rounds", str(args.rounds)]
        cmd += ["--concat"] if args.concat else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{method:<13} not measured: {last}")
            continue
        for r in json.loads(done.stdout.strip().splitlines()[-1]):
            print(f"{method:<13} {r['data']:<40} {r['n']:>5} {r['cold_s']:>8.2f} "
                  f"{r['warm_s']:>8.2f} {r['trust10']:>9.3f} {r['map_knn5']:>9.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
