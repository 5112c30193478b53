"""`tempo embed`: the maths on small arrays, then the command end to end on real photos
(../shared/data/asl-sample, resnet18 at 32 px)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tempo_cli.embed.neighbours import choose_queries, cosine_top_k, neighbours_of
from tempo_cli.embed.scores import class_agreement, same_group_share, silhouette_cosine
from tempo_cli.embed.tsne import gradient, joint_probabilities, squared_distances, tsne

TINY = ("--backbone", "resnet18", "--image-size", "32", "--device", "cpu", "--quiet")


# --- the maths -----------------------------------------------------------------------------


def _brute_top_k(q: np.ndarray, ref: np.ndarray, k: int, skip: list[int] | None = None):
    """Cosine top-k by the definition, one pair at a time."""
    out = []
    for i, a in enumerate(q):
        sims = []
        for j, b in enumerate(ref):
            if skip is not None and skip[i] == j:
                continue
            sims.append((float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), j))
        out.append([j for _, j in sorted(sims, key=lambda t: (-t[0], t[1]))[:k]])
    return np.array(out)


def test_cosine_top_k_is_brute_force() -> None:
    rng = np.random.default_rng(0)
    q, ref = rng.normal(size=(7, 5)), rng.normal(size=(30, 5)) * rng.uniform(0.1, 9, (30, 1))
    nn = cosine_top_k(q, ref, 4)
    assert np.array_equal(nn.index, _brute_top_k(q, ref, 4))
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ).T
    assert np.allclose(nn.similarity, np.take_along_axis(cos, nn.index, 1), atol=1e-6)
    # leave-one-out: the set itself, each row left out of its own list (rows 3 and 9 asked)
    loo = neighbours_of(ref, None, 5, rows=np.array([3, 9]))
    assert np.array_equal(loo.index, _brute_top_k(ref[[3, 9]], ref, 5, skip=[3, 9]))
    assert np.array_equal(neighbours_of(ref, None, 5).index[[3, 9]], loo.index)
    assert cosine_top_k(q, ref[:2], 10).index.shape == (7, 2)  # k capped at the candidates


def _silhouette_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - x @ x.T
    out = []
    for i in range(len(y)):
        own = [d[i, j] for j in range(len(y)) if y[j] == y[i] and j != i]
        if not own:
            out.append(0.0)
            continue
        a = np.mean(own)
        b = min(np.mean(d[i, y == c]) for c in set(y.tolist()) if c != y[i])
        out.append((b - a) / max(a, b))
    return float(np.mean(out))


def test_silhouette_cosine_is_its_definition() -> None:
    rng = np.random.default_rng(1)
    y = np.array([0] * 8 + [1] * 7 + [2] * 9 + [5])  # class 5: one image (scores 0)
    x = rng.normal(size=(len(y), 6)) + 2.0 * np.eye(6)[y]
    assert silhouette_cosine(x, y) == pytest.approx(_silhouette_by_definition(x, y), abs=1e-9)
    assert np.isnan(silhouette_cosine(x[:8], y[:8]))  # one class: undefined
    # a subsample above max_points is seeded: the same seed, the same number
    assert silhouette_cosine(x, y, seed=3, max_points=12) == silhouette_cosine(
        x, y, seed=3, max_points=12
    )


def test_class_agreement_and_same_group_share() -> None:
    labels, ref_labels = np.array([0, 1]), np.array([0, 0, 1, 1])
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    ref = np.array([[1.0, 0.1], [0.2, 1.0], [0.0, 1.0], [1.0, 0.0]])
    nn = cosine_top_k(q, ref, 2)  # query 0: rows 3, 0; query 1: rows 2, 1
    assert class_agreement(labels, ref_labels, nn) == pytest.approx((1 / 2 + 1 / 2) / 2)
    groups, ref_groups = ["v1", "v2"], ["v1", "v2", "v2", "v9"]
    assert same_group_share(groups, ref_groups, nn) == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert same_group_share(None, ref_groups, nn) is None


def test_queries_one_per_class_seeded_and_capped() -> None:
    labels = np.repeat(np.arange(20), 5)
    rows = choose_queries(labels, 12, seed=0)
    assert len(rows) == 12 and len(set(labels[rows].tolist())) == 12
    assert np.all(np.diff(labels[rows]) > 0)  # in class order
    assert np.array_equal(rows, choose_queries(labels, 12, seed=0))
    assert not np.array_equal(rows, choose_queries(labels, 12, seed=1))
    assert len(choose_queries(labels[:15], 12, seed=0)) == 3  # fewer classes: all of them


def _kl(p: np.ndarray, y: np.ndarray) -> float:
    w = 1 / (1 + squared_distances(y))
    np.fill_diagonal(w, 0)
    q = w / w.sum()
    off = ~np.eye(len(y), dtype=bool)
    return float((p[off] * np.log(p[off] / q[off])).sum())


def test_tsne_gradient_is_the_kl_gradient() -> None:
    """The analytic gradient against central differences of KL(P || Q)."""
    rng = np.random.default_rng(2)
    p = joint_probabilities(squared_distances(rng.normal(size=(9, 4))), perplexity=2.0)
    assert p.sum() == pytest.approx(1.0) and np.allclose(p, p.T)
    y = rng.normal(size=(9, 2))
    numeric = np.zeros_like(y)
    for i in range(9):
        for c in range(2):
            e = np.zeros_like(y)
            e[i, c] = 1e-6
            numeric[i, c] = (_kl(p, y + e) - _kl(p, y - e)) / 2e-6
    assert np.allclose(gradient(p, y), numeric, atol=1e-6)


def test_tsne_is_seed_free_and_keeps_clusters() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 25)
    x = rng.normal(size=(100, 20)) + 6.0 * np.eye(20)[labels]
    a, b = tsne(x), tsne(x)
    assert a.dtype == np.float32 and a.shape == (100, 2)
    assert np.array_equal(a, b)  # no random draw: the same points give the same map
    d = squared_distances(a.astype(np.float64))  # each point's nearest on the map
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() == 1.0


# --- the command on real photos ------------------------------------------------------------


@pytest.fixture(scope="module")
def asl_split(asl_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 120 real photos as train (first 3 of each letter) and test (last 2): symlinks."""
    root = tmp_path_factory.mktemp("asl-split")
    for cls in sorted(p for p in (asl_sample / "test").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"))
        for split, part in (("train", files[:3]), ("test", files[3:])):
            (root / split / cls.name).mkdir(parents=True)
            for f in part:
                (root / split / cls.name / f.name).symlink_to(f.resolve())
    return root


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("embed-ckpt") / "r18.pt"
    return save_checkpoint(path, arch="resnet18", backbone=build_resnet("resnet18"), image_size=32)


def _runs() -> Path:
    return Path(os.environ["TEMPO_RUNS_DIR"])


def _features(path: Path, root: Path, split: str) -> np.ndarray:
    """The features `tempo eval` computes on a cache miss (no cache involved)."""
    from tempo_cli.evaluate.features import FeatureRecipe, compute_split_features
    from tempo_cli.models.checkpoint import load_model

    backbone = load_model(str(path), "resnet18").backbone
    return compute_split_features(backbone, root, split, FeatureRecipe(32)).features.numpy()


def _tensorboard_projector(logdir: Path) -> dict:
    """What TensorBoard's projector plugin serves for the first run under logdir."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    ctx = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=mux)
    apps = ProjectorPlugin(ctx).get_plugin_apps()

    def get(route: str, **query: str):
        response = Client(apps[route]).get(route, query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    runs = json.loads(get("/runs").get_data(as_text=True))
    config = json.loads(get("/info", run=runs[0]).get_data(as_text=True))
    out: dict = {"runs": runs, "config": config, "tensors": {}}
    for emb in config["embeddings"]:
        name = emb["tensorName"]
        data = get("/tensor", run=runs[0], name=name).data
        out["tensors"][name] = np.frombuffer(data, np.float32).reshape(emb["tensorShape"])
        out["metadata"] = get("/metadata", run=runs[0], name=name).get_data(as_text=True)
        out["sprite"] = get("/sprite_image", run=runs[0], name=name)
    return out


@pytest.mark.slow
def test_embed_real_photos_end_to_end(cli, asl_split: Path, r18: Path) -> None:
    from tempo_cli.data.labelled import list_split

    args = ("embed", "--path", r18, "--path", "random", "--data", asl_split, *TINY)
    res = cli(*args, "--map", "--neighbours", "--projector", "--name", "e1")
    assert res.code == 0, res.err
    out = _runs() / "e1"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["neighbours_from"] == "train" and not metrics["leave_one_out"]
    by_label = {r["checkpoint"]: r for r in metrics["embeddings"]}
    assert set(by_label) == {"r18", "random"}

    # the .npz: plain arrays, rows = the loader's files, features = tempo eval's
    test_files = list_split(asl_split, "test")
    npz = np.load(out / "r18.npz", allow_pickle=False)
    assert npz["features"].dtype == np.float32 and npz["features"].shape == (48, 512)
    assert npz["labels"].tolist() == test_files.labels.tolist()
    assert npz["files"].tolist() == [p.relative_to(asl_split).as_posix() for p in test_files.paths]
    assert npz["class_names"].tolist() == test_files.class_names and "groups" not in npz
    test_x = _features(r18, asl_split, "test")
    assert np.abs(npz["features"] - test_x).max() < 1e-6
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == npz["files"].tolist()
    assert [int(r["label"]) for r in rows] == npz["labels"].tolist()

    # the numbers and the grid's neighbours: brute force over the same features
    train = list_split(asl_split, "train")
    train_x = _features(r18, asl_split, "train")
    brute = _brute_top_k(test_x, train_x, 5)
    agreement = (train.labels.numpy()[brute] == npz["labels"][:, None]).mean()
    assert by_label["r18"]["class_agreement"] == pytest.approx(agreement)
    grid = json.loads((out / "neighbours.json").read_text())
    rows_q = [q["row"] for q in grid["queries"]]
    assert len(rows_q) == 12  # 24 letters, capped at --queries
    assert [r["rows"] for r in grid["checkpoints"]["r18"]] == brute[rows_q].tolist()
    assert (out / "neighbours.png").stat().st_size > 0 and (out / "map.png").is_file()

    # the projector, read back by TensorBoard's own plugin
    tb = _tensorboard_projector(_runs())
    assert tb["runs"] == ["e1/projector"]
    assert np.abs(tb["tensors"]["r18"] - npz["features"]).max() < 1e-6
    assert tb["metadata"].splitlines()[1].split("\t") == ["0", "A", npz["files"][0]]
    assert tb["sprite"].mimetype == "image/png"

    # the same seed draws the same map; the features now come from the cache, and
    # `tempo eval` finds them there too (it writes no new feature file)
    assert cli(*args, "--map", "--name", "e2").code == 0
    again = np.load(_runs() / "e2" / "r18.npz", allow_pickle=False)
    assert np.array_equal(again["map"], npz["map"])
    assert np.array_equal(again["map_index"], np.arange(48))
    second = json.loads((_runs() / "e2" / "metrics.json").read_text())
    assert all(r["cached"] for r in second["embeddings"])
    cache = Path(os.environ["TEMPO_CACHE_DIR"]) / "features"
    before = sorted(cache.iterdir())
    knn = cli("eval", "knn", "--path", r18, "--data", asl_split, *TINY, "--name", "k1")
    assert knn.code == 0, knn.err
    assert sorted(cache.iterdir()) == before


def test_embed_bad_input_exits_2(cli, asl_sample: Path, asl_split: Path) -> None:
    res = cli("embed", "--path", "random", "--data", asl_sample, "--split", "val", *TINY)
    assert res.code == 2 and "--split" in res.err and "test" in res.err
    res = cli("embed", "--path", "random", "--data", asl_sample, "--bn-stats", "batch", *TINY)
    assert res.code == 2 and "--bn-stats" in res.err and "train split" in res.err
    res = cli("embed", "--path", "random", "--data", asl_split, "--k", "0", *TINY)
    assert res.code == 2 and "--k" in res.err
    assert not _runs().exists() or not any(_runs().iterdir())  # nothing written


def test_embed_groups_from_a_manifest(cli, asl_sample: Path, tmp_path: Path) -> None:
    """A manifest whose given split puts each person's photos on both sides: the groups
    reach the .npz, the CSV, the same-group share (brute force) and the grid's marks."""
    from tempo_cli.data.labelled_data import open_labelled
    from tempo_cli.evaluate.features import FeatureRecipe, compute_split_features
    from tempo_cli.models.checkpoint import load_model

    lines, group_of = ["path,label,split,group"], {}
    for letter in ["A", "B", "C", "D", "E", "F"]:
        (tmp_path / "photos" / letter).mkdir(parents=True)
        for i, f in enumerate(sorted((asl_sample / "test" / letter).glob("*.png"))):
            rel = f"photos/{letter}/{f.name}"
            shutil.copy(f, tmp_path / rel)  # copies: the loader resolves links
            group_of[rel] = f"p{i % 2}"
            lines.append(f"{rel},{letter},{'train' if i < 3 else 'test'},{group_of[rel]}")
    manifest = tmp_path / "photos.csv"
    manifest.write_text("\n".join(lines) + "\n")
    res = cli("embed", "--path", "random", "--data", manifest, *TINY, "--neighbours",
              "--k", "3", "--name", "g1")  # fmt: skip
    assert res.code == 0, res.err
    out = _runs() / "g1"
    npz = np.load(out / "random.npz", allow_pickle=False)
    assert npz["groups"].tolist() == [group_of[f] for f in npz["files"].tolist()]
    with open(out / "metadata.csv", newline="") as f:
        assert [r["group"] for r in csv.DictReader(f)] == npz["groups"].tolist()

    data = open_labelled(manifest)
    train = data.files("train")
    train_groups = np.array([group_of[p.relative_to(tmp_path).as_posix()] for p in train.paths])
    torch.manual_seed(0)  # random init is drawn from --seed (0)
    backbone = load_model("random", "resnet18").backbone
    train_x = compute_split_features(backbone, data, "train", FeatureRecipe(32)).features.numpy()
    brute = _brute_top_k(npz["features"], train_x, 3)
    share = (train_groups[brute] == npz["groups"][:, None]).mean()
    record = json.loads((out / "metrics.json").read_text())["embeddings"][0]
    assert record["same_group_share"] == pytest.approx(share)
    grid = json.loads((out / "neighbours.json").read_text())
    for q, row in zip(grid["queries"], grid["checkpoints"]["random"], strict=True):
        assert row["rows"] == brute[q["row"]].tolist()
        assert row["same_group"] == (train_groups[row["rows"]] == npz["groups"][q["row"]]).tolist()
