"""`tempo explain relevance` then `tempo explain lrp` on one classifier and the same images:
the LRP heatmaps are computed once (explain/heatmap_cache.py), and what is read back gives
the very files a fresh computation writes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from test_explain import _save_classifier, _subset


@pytest.fixture
def photos(asl_sample: Path, tmp_path: Path) -> Path:
    """One real photo per letter (24 images), their hand masks beside them."""
    return _subset(asl_sample, tmp_path / "asl", 1)


def _explain(cli, command: str, clf: Path, data: Path, out: Path, *extra: object) -> None:
    args = ("--image-size", "32", "--device", "cpu", "--quiet", "--out", out)
    r = cli("explain", command, "--path", clf, "--data", data, *args, *extra)
    assert r.code == 0, r.err


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "heatmaps").glob("*.pt"))


def _pngs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "heatmaps").glob("*.png"))}


@pytest.mark.slow  # five LRP commands on 24 photos
def test_lrp_reads_the_heatmaps_relevance_computed(
    cli, photos: Path, asl_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = _save_classifier(tmp_path / "clf.pt", 0)
    data = photos
    warm, cold = tmp_path / "warm-cache", tmp_path / "cold-cache"
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(warm))
    masks = ("--masks", asl_sample / "gtFine")
    _explain(cli, "relevance", clf, data, tmp_path / "rr", *masks)
    (entry,) = _entries(warm)  # relevance kept its 24 heatmaps
    _explain(cli, "lrp", clf, data, tmp_path / "lrp-warm")
    assert _entries(warm) == [entry]  # lrp found them: same classifier, pixels, method

    # What was read back is what a fresh computation writes, file for file.
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(cold))
    _explain(cli, "lrp", clf, data, tmp_path / "lrp-cold")
    _explain(cli, "relevance", clf, data, tmp_path / "rr-cold", *masks)
    assert _pngs(tmp_path / "lrp-warm") == _pngs(tmp_path / "lrp-cold")
    assert len(_pngs(tmp_path / "lrp-cold")) == 24
    rr = (tmp_path / "rr" / "relevance.csv").read_text()
    assert rr == (tmp_path / "rr-cold" / "relevance.csv").read_text()
    assert [e.name for e in _entries(cold)] == [entry.name]

    # lrp really reads the entry: a planted one (the maps negated) shows in its heatmaps.
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(warm))
    kept = torch.load(entry, weights_only=True)
    torch.save({**kept, "maps": -kept["maps"]}, entry)
    _explain(cli, "lrp", clf, data, tmp_path / "lrp-planted")
    assert _pngs(tmp_path / "lrp-planted") != _pngs(tmp_path / "lrp-cold")

    # A damaged entry is computed again (and rewritten); another batch size is its own key.
    entry.write_bytes(b"not a torch file")
    _explain(cli, "lrp", clf, data, tmp_path / "lrp-damaged")
    assert _pngs(tmp_path / "lrp-damaged") == _pngs(tmp_path / "lrp-cold")
    assert torch.equal(torch.load(entry, weights_only=True)["maps"], kept["maps"])
    _explain(cli, "relevance", clf, data, tmp_path / "rr-b8", *masks, "--batch-size", "8")
    assert len(_entries(warm)) == 2
    rows = list(csv.DictReader((tmp_path / "rr-b8" / "relevance.csv").open()))
    assert len(rows) == 24


def test_the_key_covers_pixels_model_method_and_batch() -> None:
    from tempo_cli.explain.heatmap_cache import heatmap_key

    x = torch.rand(4, 3, 8, 8)
    cpu = torch.device("cpu")
    key = heatmap_key("m1", x, "lrp", 16, cpu)
    assert key == heatmap_key("m1", x.clone(), "lrp", 16, cpu)
    y = x.clone()
    y[3, 2, 7, 7] += 1e-6  # one pixel of one image
    others = {
        heatmap_key("m2", x, "lrp", 16, cpu),
        heatmap_key("m1", y, "lrp", 16, cpu),
        heatmap_key("m1", x[:3], "lrp", 16, cpu),
        heatmap_key("m1", x, "saliency", 16, cpu),
        heatmap_key("m1", x, "lrp", 8, cpu),
        heatmap_key("m1", x, "lrp", 16, torch.device("meta")),
    }
    assert key not in others and len(others) == 6
