"""`tempo explain lrp | adversarial | relevance` on the real ASL photos and the demo data.

Small models (resnet18, random init + a random Linear(512, 24)) at 32-64 px keep this fast;
the numbers that matter (conservation, RR, PGD vs noise) are checked exactly or by margin.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tempo_cli.explain.adversarial import level_key
from tempo_cli.explain.attacks import AttackOptions, add_noise, noise_pattern
from tempo_cli.explain.relevance import fatten, find_masks, load_mask, relative_relevance

LETTERS = "ABCDEFGHIKLMNOPQRSTUVWXY"


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads wait on each
    other's time slices and LRP's many small convolutions run 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save_classifier(path: Path, seed: int, head: bool = True) -> Path:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    backbone = build_resnet("resnet18", "random")
    linear = nn.Linear(512, 24) if head else None
    return save_checkpoint(
        path,
        arch="resnet18",
        backbone=backbone,
        linear=linear,
        class_names=list(LETTERS) if head else None,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random classifiers (`tempo`, `baseline`) and a backbone without a head."""
    d = tmp_path_factory.mktemp("explain-models")
    return {
        "tempo": _save_classifier(d / "tempo.pth", 0),
        "baseline": _save_classifier(d / "baseline.pth", 1),
        "nohead": _save_classifier(d / "backbone.pth", 0, head=False),
    }


def _subset(src: Path, dst: Path, per_class: int, split: str = "test") -> Path:
    """`dst/<split>/<CLASS>/` with the first `per_class` images of each class (symlinks)."""
    for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
        out = dst / split / cls.name
        out.mkdir(parents=True)
        for p in sorted(cls.glob("*.png"))[:per_class]:
            (out / p.name).symlink_to(p.resolve())
    return dst


@pytest.fixture(scope="module")
def asl_tiny(asl_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real photo of each of A and B."""
    d = _subset(asl_sample, tmp_path_factory.mktemp("asl-tiny"), 1)
    for cls in (d / "test").iterdir():
        if cls.name not in ("A", "B"):
            for p in cls.iterdir():
                p.unlink()
            cls.rmdir()
    return d


@pytest.fixture(scope="module")
def asl_small(asl_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real photo per letter (24 images)."""
    return _subset(asl_sample, tmp_path_factory.mktemp("asl-small"), 1)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


# --- relative relevance: the math ----------------------------------------------------------


def test_fatten_is_gaussian_blur_then_positive_twice() -> None:
    """The reference's blur(3)>0 twice (any sigma) equals the 3x3 dilation twice."""
    from torchvision.transforms import GaussianBlur

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        mask = (torch.rand(1, 20, 24, generator=g) > 0.97).float()
        mask[0, 0, 5] = 1.0  # a pixel on the border: reflect padding must not matter
        ref = mask
        for _ in range(2):
            ref = (GaussianBlur(kernel_size=3, sigma=(0.1, 2.0))(ref) > 0).float()
        assert torch.equal(fatten(mask[0]), ref[0].bool())


def test_rr_all_ones_mask_is_exactly_one() -> None:
    r = torch.randn(7, 16, 16, generator=torch.Generator().manual_seed(1)) + 0.1
    rr = relative_relevance(r, torch.ones(7, 16, 16))
    assert torch.equal(rr, torch.ones(7, dtype=torch.float64))


def test_rr_hand_computed() -> None:
    # 2x3 heatmap, signed; mask covers the first column and (1, 1).
    r = torch.tensor([[2.0, -1.0, 1.0], [4.0, 3.0, -3.0]])
    m = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    # mean(R*M) = (2 + 4 + 3) / 6 = 1.5; mean(R) = 6 / 6 = 1.0 -> RR = 1.5
    assert float(relative_relevance(r, m)) == pytest.approx(1.5, abs=1e-12)
    # batched, with a second pair: mean(R*M) = 1/4, mean(R) = 4/4 -> 0.25
    r2 = torch.stack([r[:, :2], torch.tensor([[1.0, 1.0], [1.0, 1.0]])])
    m2 = torch.stack([m[:, :2], torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)])
    assert relative_relevance(r2, m2).tolist() == pytest.approx([9 / 8, 0.25])


def test_load_mask_resize_grayscale_fatten(tmp_path: Path) -> None:
    """One coloured pixel -> NEAREST resize -> 5x5 square after fattening twice."""
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    a[6:8, 8:10] = (228, 0, 168)  # a 2x2 block: one pixel after NEAREST resize to 8
    Image.fromarray(a).save(tmp_path / "m_gtFine_color.png")
    m = load_mask(tmp_path / "m_gtFine_color.png", 8)
    assert m.shape == (8, 8) and m.dtype == torch.bool
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert int(m.sum()) == 25
    assert (int(ys.max() - ys.min()), int(xs.max() - xs.min())) == (4, 4)


def test_find_masks_cityscapes_then_plain(tmp_path: Path) -> None:
    for p in [
        "gtFine/Test/IMG_1_gtFine_color.png",
        "gtFine/Test/IMG_1_gtFine_labelIds.png",
        "gtFine/Train/IMG_1_gtFine_color.png",
        "plain/IMG_2.png",
        "imgsFine/leftImg8bit/Test/IMG_3_leftImg8bit.png",
    ]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / p)
    found = find_masks(tmp_path, "test")
    assert set(found) == {"IMG_1", "IMG_2"}
    assert found["IMG_1"].parent.name == "Test"
    # the photos being explained are never their own masks; plain=False: Cityscapes only
    assert set(find_masks(tmp_path, "test", exclude=[tmp_path / "plain/IMG_2.png"])) == {"IMG_1"}
    assert set(find_masks(tmp_path, "test", plain=False)) == {"IMG_1"}


# --- LRP -----------------------------------------------------------------------------------


def test_lrp_conserves_relevance_without_biases() -> None:
    """No bias left to absorb relevance: input relevance sums to the one-hot seed (1)."""
    from tempo_cli.explain.attribution import lrp_relevance
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.classifier import Classifier

    torch.manual_seed(0)
    backbone = build_resnet("resnet18", "random")
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            # canonized conv bias = beta - mean * gamma / sqrt(var + eps) = 0
            m.bias.data = m.running_mean * m.weight.data / torch.sqrt(m.running_var + m.eps)
    linear = nn.Linear(512, 24)
    nn.init.zeros_(linear.bias)
    model = Classifier(backbone, linear).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 32, 32)
    rel, logits = lrp_relevance(model, x)
    assert rel.shape == x.shape and logits.shape == (3, 24)
    sums = rel.flatten(1).sum(1)
    assert torch.allclose(sums, torch.ones(3), rtol=0.01), sums
    # the canonizer (BatchNorm merged into the convolutions) is undone afterwards
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow  # LRP over the 120 photos
def test_explain_lrp_png_for_every_image(cli, asl_sample: Path, models, tmp_path: Path) -> None:
    out = tmp_path / "lrp"
    res = cli(
        "explain",
        "lrp",
        "--path",
        models["tempo"],
        "--data",
        asl_sample,
        "--image-size",
        "64",
        "--batch-size",
        "40",
        "--out",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    images = sorted((asl_sample / "test").glob("*/*.png"))
    assert len(images) == 120
    pngs = sorted((out / "heatmaps").glob("*.png"))
    assert len(pngs) == 120
    # <LETTER>_<model>_<index>.png, index = position in the split (class, then file name)
    for i, p in enumerate(images):
        assert (out / "heatmaps" / f"{p.parent.name}_tempo_{i}.png").is_file()
    with Image.open(pngs[0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert len(list((out / "sheets").glob("*.png"))) == 24
    m = _metrics(out)
    assert m["heatmaps"] == 120 and Path(m["out"]) == out / "heatmaps"
    assert json.loads((out / "config.json").read_text())["command"] == "explain-lrp"


def test_explain_lrp_compare_and_captum(cli, asl_tiny: Path, models, tmp_path: Path) -> None:
    for method in ("saliency", "integrated-gradients"):
        out = tmp_path / method
        res = cli(
            "explain",
            "lrp",
            "--path",
            models["tempo"],
            "--compare",
            models["baseline"],
            "--data",
            asl_tiny,
            "--image-size",
            "32",
            "--method",
            method,
            "--no-sheets",
            "--out",
            out,
            "--quiet",
        )
        assert res.code == 0, res.err
        assert _metrics(out)["heatmaps"] == 4
        assert (out / "heatmaps" / "B_baseline_1.png").is_file()


def test_explain_image_size_auto_is_the_recorded_one(cli, asl_tiny: Path, tmp_path: Path) -> None:
    """A classifier that records 32 px is explained at 32 px; another size warns once."""
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "clf32.pth",
        arch="resnet18",
        backbone=build_resnet("resnet18", "random"),
        linear=nn.Linear(512, 24),
        image_size=32,
    )
    args = ("explain", "lrp", "--path", ckpt, "--data", asl_tiny, "--method", "saliency")
    res = cli(*args, "--no-sheets", "--out", tmp_path / "auto", "--quiet")
    assert res.code == 0, res.err
    assert "warning" not in res.err and _metrics(tmp_path / "auto")["image_size"] == 32
    with Image.open(next((tmp_path / "auto" / "heatmaps").glob("*.png"))) as im:
        assert im.size == (32, 32)
    res = cli(*args, "--image-size", "40", "--no-sheets", "--out", tmp_path / "40", "--quiet")
    assert res.code == 0, res.err
    assert _metrics(tmp_path / "40")["image_size"] == 40
    (line,) = [x for x in res.err.splitlines() if "warning" in x]
    assert "40" in line and "32" in line


def test_explain_without_linear_head_exits_1(cli, asl_small: Path, models) -> None:
    res = cli("explain", "lrp", "--path", models["nohead"], "--data", asl_small, "--quiet")
    assert res.code == 1
    assert "tempo eval linear" in res.err and "--save-model" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_explain_bad_options_exit_2(cli, asl_small: Path, models) -> None:
    res = cli("explain", "adversarial", "--path", models["tempo"], "--levels", "0,1.5")
    assert res.code == 2 and "--levels" in res.err
    res = cli("explain", "lrp", "--path", models["tempo"], "--method", "gradcam")
    assert res.code == 2 and "--method" in res.err
    res = cli("explain", "lrp", "--path", models["tempo"], "--data", asl_small, "--split", "x")
    assert res.code == 2 and "--split" in res.err and "test" in res.err


# --- relevance -----------------------------------------------------------------------------


@pytest.mark.slow  # LRP over the 120 photos
def test_explain_relevance_120_values(cli, asl_sample: Path, models, tmp_path: Path) -> None:
    out = tmp_path / "rr"
    res = cli(
        "explain",
        "relevance",
        "--path",
        models["tempo"],
        "--data",
        asl_sample,
        "--masks",
        asl_sample / "gtFine",
        "--image-size",
        "64",
        "--batch-size",
        "40",
        "--out",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    rows = list(csv.DictReader((out / "relevance.csv").open()))
    assert len(rows) == 120
    rr = np.array([float(r["rr"]) for r in rows])
    assert np.isfinite(rr).all()
    m = _metrics(out)
    (rec,) = m["models"]
    assert rec["n"] == 120 and m["skipped_no_mask"] == 0
    assert rec["rr_mean"] == pytest.approx(rr.mean(), abs=1e-6)
    assert rec["rr_std"] == pytest.approx(rr.std(), abs=1e-6)
    assert (out / "relevance_hist.png").is_file()
    assert "Relative relevance" in res.out  # the rich table


def test_explain_relevance_plain_masks_ones_and_missing(
    cli, asl_small: Path, models, tmp_path: Path
) -> None:
    """Plain `<ID>.png` all-white masks give RR = 1 exactly; a missing mask is skipped."""
    masks = tmp_path / "masks"
    masks.mkdir()
    ids = sorted(p.stem for p in (asl_small / "test").glob("*/*.png"))
    for image_id in ids[1:]:
        Image.new("RGB", (256, 256), (255, 255, 255)).save(masks / f"{image_id}.png")
    out = tmp_path / "rr"
    res = cli(
        "explain",
        "relevance",
        "--path",
        models["tempo"],
        "--compare",
        models["baseline"],
        "--data",
        asl_small,
        "--masks",
        masks,
        "--image-size",
        "32",
        "--out",
        out,
    )
    assert res.code == 0, res.err
    assert "no mask" in res.err and ids[0] in res.err
    rows = list(csv.DictReader((out / "relevance.csv").open()))
    assert len(rows) == 2 * 23
    assert all(float(r["rr"]) == 1.0 for r in rows)
    m = _metrics(out)
    assert m["skipped_no_mask"] == 1
    assert [r["n"] for r in m["models"]] == [23, 23]
    assert all(r["rr_mean"] == 1.0 and r["rr_std"] == 0.0 for r in m["models"])


# --- registries ----------------------------------------------------------------------------


def test_registries_name_what_the_settings_accept() -> None:
    """`--method` / `--attack` are Literals in the (torch-free) settings: same names."""
    from typing import get_args

    from tempo_cli.explain.attacks import ATTACKS, NOISES
    from tempo_cli.explain.attribution import METHODS
    from tempo_cli.explain.colours import CMAPS
    from tempo_cli.settings.explain import (
        DEFAULT_LEVELS,
        ExplainAdversarialSettings,
        ExplainLrpSettings,
        ExplainSettings,
    )

    def names(cls, field: str) -> set[str]:
        return set(get_args(cls.model_fields[field].annotation))

    assert set(METHODS) == names(ExplainSettings, "method")
    assert set(ATTACKS) == names(ExplainAdversarialSettings, "attack")
    assert set(DEFAULT_LEVELS) == set(ATTACKS)
    assert set(NOISES) == names(ExplainAdversarialSettings, "noise")
    assert set(CMAPS) == names(ExplainAdversarialSettings, "cmap")
    assert set(CMAPS) == names(ExplainLrpSettings, "cmap")


# --- noise and attacks ---------------------------------------------------------------------


def test_noise_is_seeded_bounded_and_batch_independent() -> None:
    a = noise_pattern(3, (3, 8, 8), seed=0)
    assert torch.equal(a, noise_pattern(3, (3, 8, 8), seed=0))
    assert not torch.equal(a, noise_pattern(4, (3, 8, 8), seed=0))
    assert not torch.equal(a, noise_pattern(3, (3, 8, 8), seed=1))
    assert float(a.abs().max()) <= 1.0
    x = torch.rand(1, 3, 8, 8)
    noisy = add_noise(x.clone(), a[None], 0.2)
    assert float((noisy - x).abs().max()) <= 0.2 + 1e-6
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    assert level_key(0.1) == "0.1" and level_key(0.0) == "0"


def test_gradient_attacks_stay_in_budget_and_use_the_clean_class() -> None:
    """FGSM/PGD: within the L-inf ball and [0, 1]; an unknown class (-1) is replaced by
    the clean prediction; eps 0 is the clean image; both change some predictions."""
    from tempo_cli.explain.attacks import ATTACKS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        clean = model(x).argmax(1)
    unknown = torch.full_like(clean, -1)
    fooled = {}
    for name in ("fgsm", "pgd"):
        attack = ATTACKS[name]
        kw = {"indices": list(range(16)), "options": AttackOptions.default(steps=5)}
        assert torch.equal(attack.perturb(model, x, clean, 0.0, **kw), x)
        xa = attack.perturb(model, x, clean, 0.05, **kw)
        assert float((xa - x).abs().max()) <= 0.05 + 1e-6
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
        assert torch.equal(attack.perturb(model, x, unknown, 0.05, **kw), xa)
        with torch.no_grad():
            fooled[name] = int((model(xa).argmax(1) != clean).sum())
    assert fooled["fgsm"] > 0 and fooled["pgd"] > 0, fooled


@pytest.mark.slow
def test_explain_adversarial_noise_figure_and_table(
    cli, asl_small: Path, models, tmp_path: Path
) -> None:
    out = tmp_path / "adv"
    res = cli(
        "explain",
        "adversarial",
        "--path",
        models["tempo"],
        "--compare",
        models["baseline"],
        "--data",
        asl_small,
        "--image-size",
        "32",
        "--figures",
        "2",
        "--batch-size",
        "24",
        "--out",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    figs = sorted((out / "figures").glob("*.png"))
    assert [p.name for p in figs] == ["A_0.png", "B_1.png"]
    with Image.open(figs[0]) as im:  # 6 levels wide, 3 rows (noisy images + 2 models)
        assert im.size[0] > im.size[1] > 0
    assert (out / "accuracy_noise.png").is_file()
    table = (out / "accuracy_noise.csv").read_text().splitlines()
    assert table[0] == "level,tempo,baseline" and len(table) == 7
    assert "Accuracy against noise level" in res.out
    m = _metrics(out)
    assert [r["checkpoint"] for r in m["models"]] == [str(models["tempo"]), str(models["baseline"])]
    for r in m["models"]:
        assert r["attack"] == "noise"
        assert list(r["accuracy_by_level"]) == ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]
        assert all(0.0 <= a <= 1.0 for a in r["accuracy_by_level"].values())
    # the study's noise model by default, recorded; heatmaps in the study's colours
    assert (m["noise"], m["noise_scale"], m["labelled"]) == ("gaussian", 0.3, True)
    assert m["cmap"] == "reference"
    assert _bluish_pixels(figs[0]) > 0  # negative relevance is blue (a Reds ramp has none)


def _train_demo_classifier(demo_root: Path, path: Path, size: int) -> Path:
    """Frozen random resnet18 + a linear head trained on 10 demo images per class.

    The feature standardisation is folded into the Linear so the checkpoint is a plain
    backbone + linear classifier.
    """
    from tempo_cli.data.labelled import load_split
    from tempo_cli.data.transforms import NEAREST, normalize
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import save_checkpoint

    train = load_split(demo_root, "train", size, interpolation=NEAREST)
    labels = train.label_names
    keep = [i for i, lab in enumerate(labels) if labels[: i + 1].count(lab) <= 10]
    names = sorted(set(labels))
    y = torch.tensor([names.index(labels[i]) for i in keep])
    torch.manual_seed(0)
    backbone = build_resnet("resnet18", "random").eval()
    with torch.no_grad():
        f = backbone(normalize(train.pixels(keep)))
    mu, sd = f.mean(0), f.std(0) + 1e-6
    lin = nn.Linear(512, len(names))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        loss = nn.functional.cross_entropy(lin((f - mu) / sd), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    folded = nn.Linear(512, len(names))
    with torch.no_grad():
        folded.weight.copy_(lin.weight / sd)
        folded.bias.copy_(lin.bias - (lin.weight * (mu / sd)).sum(1))
    return save_checkpoint(
        path, arch="resnet18", backbone=backbone, linear=folded, class_names=names
    )


@pytest.mark.slow
def test_pgd_lowers_accuracy_more_than_noise_of_same_budget(
    cli, demo_root: Path, tmp_path: Path
) -> None:
    ckpt = _train_demo_classifier(demo_root, tmp_path / "demo_clf.pth", 32)
    data = _subset(demo_root, tmp_path / "demo-small", 2)
    eps = "0.03"
    acc = {}
    for attack in ("noise", "fgsm", "pgd"):
        out = tmp_path / attack
        res = cli(
            "explain",
            "adversarial",
            "--path",
            ckpt,
            "--data",
            data,
            "--attack",
            attack,
            "--levels",
            f"0,{eps}",
            "--steps",
            "3",
            "--image-size",
            "32",
            "--figures",
            "1" if attack == "pgd" else "0",
            "--batch-size",
            "48",
            "--out",
            out,
            "--quiet",
        )
        assert res.code == 0, res.err
        (rec,) = _metrics(out)["models"]
        assert rec["attack"] == attack
        acc[attack] = rec["accuracy_by_level"]
    clean = acc["noise"]["0"]
    assert clean == acc["pgd"]["0"]
    assert clean > 3 / 24, clean  # well above chance (1/24)
    assert acc["pgd"][eps] < acc["noise"][eps] - 0.05, acc
    assert acc["fgsm"][eps] < acc["noise"][eps], acc
    assert math.isfinite(acc["pgd"][eps])
    assert (tmp_path / "pgd" / "figures" / "A_0.png").is_file()


# --- the study's noise model (issue 11) ------------------------------------------------------


def _excess_kurtosis(d: torch.Tensor) -> float:
    d = d.double().flatten()
    d = d - d.mean()
    return float((d**4).mean() / (d**2).mean() ** 2 - 3.0)


def test_default_noise_on_flat_grey_is_the_studys() -> None:
    """`tempo explain adversarial`'s defaults at level 0.3 on a flat grey 128 px image:
    per-pixel differences with std 0.09 +- 0.01 (0.3 x level) and excess kurtosis near 0
    (Gaussian; today's uniform noise: std 0.173, kurtosis -1.2)."""
    from tempo_cli.explain.attacks import ATTACKS
    from tempo_cli.settings.explain import ExplainAdversarialSettings

    settings = ExplainAdversarialSettings(path="clf.pth")
    assert (settings.attack, settings.noise, settings.noise_scale) == ("noise", "gaussian", 0.3)
    attack = ATTACKS[settings.attack]
    grey = torch.full((2, 3, 128, 128), 0.5)
    y = torch.full((2,), -1)
    noisy = attack.perturb(
        None, grey, y, 0.3, indices=[0, 1], options=AttackOptions.from_settings(settings)
    )
    d = noisy - grey
    assert float(d.std()) == pytest.approx(0.09, abs=0.01)
    assert abs(_excess_kurtosis(d)) < 0.1
    assert float(d.mean()) == pytest.approx(0.0, abs=0.003)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    # independent per pixel and colour channel: neighbours and channels uncorrelated
    a = d[0].flatten(1)
    assert abs(float(torch.corrcoef(a[:2])[0, 1])) < 0.03
    assert (
        abs(float(torch.corrcoef(torch.stack([d[0, 0, :, :-1], d[0, 0, :, 1:]]).flatten(1))[0, 1]))
        < 0.03
    )
    # seeded per image, so independent of the batch: image 1 alone is the same
    alone = attack.perturb(
        None, grey[1:], y[1:], 0.3, indices=[1], options=AttackOptions.from_settings(settings)
    )
    assert torch.equal(alone, noisy[1:])
    # one pattern growing with the level
    at_01 = attack.perturb(
        None, grey, y, 0.1, indices=[0, 1], options=AttackOptions.from_settings(settings)
    )
    assert torch.allclose(3 * (at_01 - grey), d, atol=1e-5)
    # --noise-scale scales the std
    half = AttackOptions.default(noise="gaussian", noise_scale=0.15)
    d2 = attack.perturb(None, grey, y, 0.3, indices=[0, 1], options=half) - grey
    assert float(d2.std()) == pytest.approx(0.045, abs=0.005)


def test_uniform_noise_keeps_the_earlier_model_exactly() -> None:
    """`--noise uniform`: clip(x + level * u, 0, 1), u the seeded uniform pattern."""
    from tempo_cli.explain.attacks import ATTACKS

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    options = AttackOptions.default(seed=4, noise="uniform", noise_scale=0.7)  # scale: not used
    noisy = ATTACKS["noise"].perturb(
        None, x, torch.zeros(3), 0.2, indices=[5, 6, 7], options=options
    )
    expected = torch.stack(
        [
            add_noise(x[k : k + 1].clone(), noise_pattern(5 + k, (3, 16, 16), 4)[None], 0.2)[0]
            for k in range(3)
        ]
    )
    assert torch.equal(noisy, expected)
    assert ATTACKS["noise"].metrics(options) == {"noise": "uniform", "noise_scale": None}


def test_noise_options_exit_2(cli, models) -> None:
    res = cli("explain", "adversarial", "--path", models["tempo"], "--noise-scale", "0")
    assert res.code == 2 and "--noise-scale" in res.err
    res = cli("explain", "adversarial", "--path", models["tempo"], "--noise", "salt")
    assert res.code == 2 and "--noise" in res.err
    res = cli("explain", "lrp", "--path", models["tempo"], "--cmap", "jet")
    assert res.code == 2 and "--cmap" in res.err and "reference" in res.err


# --- heatmap colours and contact sheets --------------------------------------------------------


def _bluish_pixels(png: Path) -> int:
    """Pixels clearly more blue than red (none in a white-to-red ramp)."""
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return int(((a[..., 2] - a[..., 0]) > 60).sum())


def test_reference_colours_are_zennits_signed_symmetric_map() -> None:
    """Zero -> light grey, +max -> red #d00000, -max -> blue #0000d0, symmetric in sign,
    exactly zennit's `seismic` palette on its symmetric scale."""
    from zennit.image import palette

    from tempo_cli.explain.figures import heatmap_rgb

    h = np.array([[0.0, 2.0, -2.0, 1.0], [-1.0, 0.5, -0.5, 0.0]])
    rgb = heatmap_rgb(h)  # the default
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert tuple(rgb[0, 1]) == (0xD0, 0, 0) and tuple(rgb[0, 2]) == (0, 0, 0xD0)
    assert np.abs(rgb[0, 0].astype(int) - 0xD0).max() <= 2  # zero: light grey (#ceced0)
    # symmetric: -R is R's colour with red and blue swapped (up to zennit's rounding)
    assert np.abs(rgb[1, 0].astype(int) - rgb[0, 3][::-1].astype(int)).max() <= 2
    # zennit's arithmetic: index = int(255 * (R + m) / 2m), m = max |R|
    pal = np.asarray(palette("seismic")).reshape(256, 3)
    index = ((h + 2.0) / 4.0 * 255).clip(0, 255).astype(np.uint8)
    assert np.array_equal(rgb, pal[index])
    # the scale is symmetric: a map of only positive relevance has no blue
    pos = heatmap_rgb(np.array([[0.0, 1.0], [0.25, 0.5]]))
    assert tuple(pos[0, 0]) == tuple(rgb[0, 0]) and (pos[..., 2] <= 0xD0).all()
    # an all-zero map is uniform zero-grey, not a division by zero
    assert (heatmap_rgb(np.zeros((3, 3))) == rgb[0, 0]).all()
    # --cmap reds: the earlier white-to-red ramp from the minimum
    reds = heatmap_rgb(h, "reds")
    assert reds[0, 2].min() >= 240  # the minimum: white
    assert reds[0, 1][0] > 3 * int(reds[0, 1][2])  # the maximum: red


def test_contact_sheet_is_a_grid_that_fits_a_screen() -> None:
    """20 images x (photo + 2 heatmaps) at 64 px: a grid within 1920 x 1080 with 128 px
    cells, not one 20-row column (268 x 2944 px before)."""
    from tempo_cli.explain.figures import contact_sheet

    n = 20
    pixels = torch.rand(n, 3, 64, 64)
    maps = [torch.randn(n, 64, 64), torch.randn(n, 64, 64)]
    preds = [["A"] * n, ["B"] * n]
    sheet = contact_sheet("class A", pixels, maps, ["tempo", "baseline"], preds)
    w, h = sheet.size
    assert w <= 1920 and h <= 1080, sheet.size
    assert w > h  # landscape, like the screen
    # cells stay 128 px (the whole image visible at the size the single column used)
    a = np.asarray(sheet).astype(int)
    grey_row = (np.abs(a - 0xCE).max(-1) <= 60).sum(1)  # heatmap pixels per row
    assert grey_row.max() >= 2 * 128  # a row crosses several heatmaps side by side
    # a small class stays small; a large one still fits the screen (smaller cells)
    assert contact_sheet("x", pixels[:2], maps[:1], ["t"], preds[:1]).size[1] < 400
    big = contact_sheet(
        "x", torch.rand(60, 3, 64, 64), [torch.randn(60, 64, 64)], ["t"], [["A"] * 60]
    )
    assert big.size[0] <= 1920 and big.size[1] <= 1080, big.size


def test_explain_lrp_writes_reference_colours(cli, asl_tiny: Path, models, tmp_path: Path) -> None:
    """Every heatmap PNG uses the reference palette by default; `--cmap reds` the ramp."""
    from zennit.image import palette

    pal = {tuple(c) for c in np.asarray(palette("seismic")).reshape(256, 3).tolist()}
    for cmap in ("reference", "reds"):
        out = tmp_path / cmap
        args = ["--cmap", cmap] if cmap != "reference" else []
        res = cli(
            "explain",
            "lrp",
            "--path",
            models["tempo"],
            "--data",
            asl_tiny,
            "--image-size",
            "32",
            "--out",
            out,
            "--quiet",
            *args,
        )
        assert res.code == 0, res.err
        assert _metrics(out)["cmap"] == cmap
        for png in (out / "heatmaps").glob("*.png"):
            with Image.open(png) as im:
                colours = {tuple(c) for c in np.asarray(im).reshape(-1, 3).tolist()}
            inside = colours <= pal
            assert inside == (cmap == "reference"), (png, len(colours - pal))
            if cmap == "reference":  # the extreme of |R| is full red or full blue
                assert (0xD0, 0, 0) in colours or (0, 0, 0xD0) in colours
        assert (out / "sheets" / "A.png").is_file()


# --- unlabelled photos (--images DIR) ---------------------------------------------------------


@pytest.fixture
def flat_photos(asl_tiny: Path, tmp_path: Path) -> Path:
    """A flat folder: two real photos and a flat grey image, no class folders."""
    d = tmp_path / "photos"
    d.mkdir()
    for k, p in enumerate(sorted((asl_tiny / "test").glob("*/*.png"))):
        (d / f"photo{k}.png").symlink_to(p.resolve())
    Image.new("RGB", (80, 80), (128, 128, 128)).save(d / "grey.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_explain_lrp_unlabelled_folder(cli, flat_photos: Path, models, tmp_path: Path) -> None:
    out = tmp_path / "lrp"
    res = cli(
        "explain",
        "lrp",
        "--path",
        models["tempo"],
        "--compare",
        models["baseline"],
        "--images",
        flat_photos,
        "--image-size",
        "32",
        "--method",
        "saliency",
        "--out",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    names = sorted(p.name for p in (out / "heatmaps").glob("*.png"))
    # images in name order: grey, photo0, photo1
    assert names == sorted(
        f"{i}_{m}_{k}.png"
        for k, i in enumerate(["grey", "photo0", "photo1"])
        for m in ("tempo", "baseline")
    )
    assert [p.name for p in (out / "sheets").glob("*.png")] == ["images_1.png"]
    m = _metrics(out)
    assert m["labelled"] is False and m["images"] == 3 and m["heatmaps"] == 6
    assert Path(m["images_dir"]) == flat_photos
    assert all("accuracy" not in r for r in m["models"])
    assert "accuracy" not in res.err


def test_explain_adversarial_unlabelled_folder(
    cli, flat_photos: Path, models, tmp_path: Path
) -> None:
    out = tmp_path / "adv"
    res = cli(
        "explain",
        "adversarial",
        "--path",
        models["tempo"],
        "--compare",
        models["baseline"],
        "--images",
        flat_photos,
        "--image-size",
        "32",
        "--method",
        "saliency",
        "--levels",
        "0,0.3",
        "--out",
        out,
    )
    assert res.code == 0, res.err
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "grey_0.png",
        "photo0_1.png",
        "photo1_2.png",
    ]
    assert not list(out.glob("accuracy_*"))  # no accuracy table, plot or printout
    assert "Accuracy" not in res.out
    m = _metrics(out)
    assert m["labelled"] is False and m["images"] == 3
    assert "table" not in m and "plot" not in m
    for r in m["models"]:
        assert "accuracy_by_level" not in r and r["attack"] == "noise"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 3 * 2 * 2
    assert {r["id"] for r in rows} == {"grey", "photo0", "photo1"}
    assert all(r["prediction"] in LETTERS for r in rows)


def test_explain_images_must_be_a_flat_folder_of_images(
    cli, asl_tiny: Path, models, tmp_path: Path
) -> None:
    for bad in (tmp_path / "missing", asl_tiny):  # asl_tiny holds only folders
        res = cli("explain", "adversarial", "--path", models["tempo"], "--images", bad, "--quiet")
        assert res.code == 2, res.err
        assert "--images" in res.err and "flat folder" in res.err
        assert len(res.err.strip().splitlines()) == 1
