"""`tempo pretrain --pairs temporal|same --augment none|light|strong`.

The augmentation draws per image and per view from a generator seeded by (seed, epoch,
batch, rank); `--augment none` leaves the step exactly as it was (checked against a
hand-written reference loop); resumed augmented runs match uninterrupted ones.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tempo_cli.pretrain.augment import AUGMENTS, PairAugmenter, crop_boxes, step_generator
from tempo_cli.settings import load_settings
from tempo_cli.settings.pretrain import PretrainSettings


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory, write_frames) -> Path:
    return write_frames(tmp_path_factory.mktemp("augment") / "frames", 48)


def tiny(frames: Path, **over: Any) -> PretrainSettings:
    """Settings of a tiny CPU run (48 frames, batches of 16: 3 steps per epoch)."""
    values: dict[str, Any] = {
        "data": str(frames),
        "backbone": "resnet18",
        "init": "random",
        "image_size": 32,
        "batch_size": 16,
        "epochs": 1,
        "optimizer": "adamw",
        "lr": 1e-3,
        "proximity": 3,
        "quiet": True,
        "device": "cpu",
        "name": "t",
    }
    values.update(over)
    return load_settings(PretrainSettings, values)


def losses(metrics: dict[str, Any]) -> list[float]:
    return [e["loss"] for e in metrics["epochs"]]


def one_frame_batch(n: int = 8, side: int = 32) -> torch.Tensor:
    """n copies of one structured frame -> uint8 (n, 3, side, side): any difference between
    the outputs comes from the augmentation alone."""
    ramp = torch.linspace(0, 255, side)
    img = torch.stack([ramp.view(1, -1).expand(side, side), ramp.view(-1, 1).expand(side, side)])
    img = torch.cat([img, 255 - img[:1]]).round().to(torch.uint8)
    img[:, 4:12, 20:28] = 255  # an off-centre patch, so flips and crops show
    return img.expand(n, 3, side, side).contiguous()


# --- the recipes -----------------------------------------------------------------------


def test_recipe_names_match_the_settings() -> None:
    field = PretrainSettings.model_fields["augment"]
    assert set(typing.get_args(field.annotation)) == set(AUGMENTS)
    assert AUGMENTS["none"].views is None
    light_1, light_2 = AUGMENTS["light"].views
    assert light_1 == light_2 and light_1.jitter_p == light_1.gray_p == light_1.blur_p == 0
    strong_1, strong_2 = AUGMENTS["strong"].views
    assert (strong_1.blur_p, strong_2.blur_p) == (1.0, 0.1)  # the paper's asymmetry
    assert (strong_1.solarize_p, strong_2.solarize_p) == (0.0, 0.2)
    assert strong_1.jitter_p == strong_2.jitter_p == 0.8
    assert strong_1.gray_p == strong_2.gray_p == 0.2


def test_strong_draws_follow_the_per_view_probabilities() -> None:
    aug = PairAugmenter(AUGMENTS["strong"], seed=0)
    n = 4000
    a, b = aug.draw(n, 32, epoch=0, batch=0)
    sd = (0.25 / n) ** 0.5  # the largest binomial standard deviation of a rate
    assert bool(a.blur.all()) and abs(b.blur.float().mean().item() - 0.1) < 5 * sd
    assert not bool(a.solarize.any()) and abs(b.solarize.float().mean().item() - 0.2) < 5 * sd
    for v in (a, b):
        assert abs(v.jitter.float().mean().item() - 0.8) < 5 * sd
        assert abs(v.gray.float().mean().item() - 0.2) < 5 * sd
        assert abs(v.flip.float().mean().item() - 0.5) < 5 * sd
        # the paper's sigma range (0.1-2 px at its 224 px), scaled to the 32-px frames
        lo, hi = 0.1 * 32 / 224, 2.0 * 32 / 224
        assert bool((v.sigma >= lo).all() and (v.sigma <= hi).all())
        assert bool((v.factors[:, 3].abs() <= 0.1).all())  # hue
        assert bool((torch.sort(v.order, 1).values == torch.arange(4)).all())  # permutations


def test_crop_boxes_fit_and_cover_the_scale_range() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(5000, 32, (0.08, 1.0), g)
    top, left, h, w = boxes.T
    assert bool((h >= 1).all() and (w >= 1).all())
    assert bool((top + h <= 32).all() and (left + w <= 32).all() and (top >= 0).all())
    frac = (h * w).double() / 32**2
    assert frac.min() < 0.12 and frac.max() > 0.9  # small and near-whole crops both occur
    ratio = w.double() / h.double()
    assert ratio.min() < 0.85 and ratio.max() > 1.15  # aspect ratios vary too


def test_crop_scale_sets_the_smallest_crop_of_both_views() -> None:
    aug = PairAugmenter(AUGMENTS["strong"], seed=0, crop_scale=0.5)
    a, b = aug.draw(2000, 32, epoch=0, batch=0)
    for v in (a, b):
        frac = (v.boxes[:, 2] * v.boxes[:, 3]).double() / 32**2
        assert frac.min() > 0.4  # 0.5 of the area, give or take rounding to whole pixels
    default = PairAugmenter(AUGMENTS["strong"], seed=0).draw(2000, 32, epoch=0, batch=0)[0]
    assert float(((default.boxes[:, 2] * default.boxes[:, 3]).double() / 32**2).min()) < 0.15


def per_image_view(x: torch.Tensor, p) -> torch.Tensor:
    """The strong view as torchvision's public per-image ops compute it: the reference the
    batched implementation must equal bit for bit. x: float (B, 3, S, S) in [0, 1]."""
    from torchvision.transforms.v2 import functional as F

    from tempo_cli.pretrain.augment import blur_kernel

    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    side, out = x.shape[-1], []
    for i, img in enumerate(x):
        img = F.resized_crop(img, *p.boxes[i].tolist(), size=[side, side], antialias=True)
        img = img.clamp(0.0, 1.0)
        if p.flip[i]:
            img = F.horizontal_flip(img)
        if p.jitter[i]:
            for k in p.order[i].tolist():
                img = ops[k](img, float(p.factors[i, k]))
        if p.gray[i]:
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        if p.blur[i]:
            k = blur_kernel(side)
            img = F.gaussian_blur(img, [k, k], [float(p.sigma[i])] * 2)
        if p.solarize[i]:
            img = F.solarize(img, threshold=0.5)
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)


@pytest.mark.parametrize("view", [0, 1])
def test_batched_view_equals_torchvisions_per_image_ops_bit_for_bit(view: int) -> None:
    """Colour jitter runs batched with per-image factors and op orders; the views equal
    torchvision's per-image functional ops exactly (grey, black and white pixels too: the
    HSV conversion's special cases)."""
    from tempo_cli.pretrain.augment import apply_view, draw_view
    from tempo_cli.pretrain.colour_jitter import jitter_batch

    g = torch.Generator().manual_seed(3)
    x = torch.rand(48, 3, 32, 32, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    x[2] = x[2, :1].expand(3, 32, 32)  # grey: max == min in every pixel
    x[3, :, :16] = 0.5
    recipe = AUGMENTS["strong"].views[view]
    p = draw_view(recipe, 48, 32, step_generator(0, 1, 2, 0))
    assert p.jitter.any() and (~p.jitter).any()
    assert len({tuple(o) for o in p.order[p.jitter].tolist()}) > 6  # many op orders
    assert torch.equal(apply_view(x.clone(), p), per_image_view(x.clone(), p))
    # every image jittered (no mask), against F.adjust_* in each image's order
    ops = ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue")
    from torchvision.transforms.v2 import functional as F

    want = []
    for i, img in enumerate(x):
        for k in p.order[i].tolist():
            img = getattr(F, ops[k])(img, float(p.factors[i, k]))
        want.append(img)
    assert torch.equal(jitter_batch(x.clone(), p.factors, p.order), torch.stack(want))


# --- per image, per view, seeded -------------------------------------------------------


@pytest.mark.parametrize("name", ["light", "strong"])
def test_views_differ_per_view_and_per_image_and_repeat_per_step(name: str) -> None:
    x = one_frame_batch()
    aug = PairAugmenter(AUGMENTS[name], seed=0)
    p_a, p_b = aug.draw(len(x), 32, epoch=0, batch=0)
    # Two images of one batch: different crop boxes, and so different pixels.
    assert len({tuple(b) for b in p_a.boxes.tolist()}) > 1
    view_a, view_b = aug(x, x, epoch=0, batch=0)
    assert view_a.shape == view_b.shape == (8, 3, 32, 32)
    assert view_a.dtype == torch.float32 and view_a.min() >= 0 and view_a.max() <= 1
    first = p_a.boxes[0]
    other = next(i for i in range(1, 8) if not torch.equal(p_a.boxes[i], first))
    assert not torch.equal(view_a[0], view_a[other])
    # The same frame's two views (of one pair): drawn independently, different pixels.
    assert not torch.equal(p_a.boxes, p_b.boxes)
    for i in range(8):
        assert not torch.equal(view_a[i], view_b[i]), i
    # The same (seed, epoch, batch) gives identical views; another batch, other views.
    again_a, again_b = aug(x, x, epoch=0, batch=0)
    assert torch.equal(again_a, view_a) and torch.equal(again_b, view_b)
    next_a, _ = aug(x, x, epoch=0, batch=1)
    assert not torch.equal(next_a, view_a)


def test_step_generator_separates_seed_epoch_batch_and_rank() -> None:
    draws = {
        key: torch.rand(4, generator=step_generator(*key)).tolist()
        for key in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    }
    assert len({tuple(v) for v in draws.values()}) == len(draws)
    assert torch.rand(4, generator=step_generator(0, 0, 0, 0)).tolist() == draws[(0, 0, 0, 0)]


def test_augmentation_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    PairAugmenter(AUGMENTS["strong"], seed=5)(one_frame_batch(), one_frame_batch(), 2, 7)
    assert torch.equal(torch.rand(3), expected)


# --- pairs and settings ----------------------------------------------------------------


def test_same_pairs_are_each_frame_with_itself_in_the_temporal_order() -> None:
    from tempo_cli.data.pairs import epoch_pairs
    from tempo_cli.data.sequences import FrameStore

    store = FrameStore(torch.zeros(12, 3, 2, 2, dtype=torch.uint8), [0, 5], [5, 7])
    a_t, p_t = epoch_pairs(store, "uniform", 2, seed=3, epoch=1)
    a_s, p_s = epoch_pairs(store, "uniform", 2, seed=3, epoch=1, pairs="same")
    assert torch.equal(a_s, p_s) and not torch.equal(a_t, p_t)
    assert torch.equal(a_s, a_t)  # one pair per frame, in the temporal anchors' order
    halves = [epoch_pairs(store, "uniform", 2, 3, 1, r, 2, pairs="same")[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), a_s)  # ranks share one epoch as for temporal
    # Single-frame sequences have no temporal partner, but pair with themselves.
    store = FrameStore(torch.zeros(13, 3, 2, 2, dtype=torch.uint8), [0, 5, 12], [5, 7, 1])
    a_s, p_s = epoch_pairs(store, "uniform", 2, seed=3, epoch=1, pairs="same")
    assert torch.equal(a_s, p_s) and sorted(a_s.tolist()) == list(range(13))
    singles = FrameStore(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), [0, 1], [1, 1])
    assert epoch_pairs(singles, "uniform", 2, 0, 0, pairs="same")[0].numel() == 2


def test_same_pairs_without_augmentation_exit_2_naming_the_options(cli) -> None:
    r = cli("pretrain", "--pairs", "same", "--augment", "none")
    assert r.code == 2, r.err
    assert "invalid value for --augment:" in r.err and "--pairs same" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    r = cli("pretrain", "--pairs", "same")  # the default --augment none as well
    assert r.code == 2 and "--augment" in r.err
    for bad in (["--pairs", "later"], ["--augment", "heavy"]):
        r = cli("pretrain", *bad)
        assert r.code == 2 and f"invalid value for {bad[0]}:" in r.err, r.err
    s = load_settings(PretrainSettings, {"pairs": "same", "augment": "light"})
    assert (s.pairs, s.augment) == ("same", "light")
    d = PretrainSettings()
    assert (d.pairs, d.augment) == ("temporal", "none")  # the reference


# --- the loop --------------------------------------------------------------------------


def reference_losses(s: PretrainSettings) -> list[float]:
    """The step losses of epoch 0 computed by hand: data.pairs + model + loss, no tempo loop.

    The oracle of `--augment none --pairs temporal`: the loop must feed exactly these
    batches (normalised, unaugmented) in this order.
    """
    from tempo_cli.data.pairs import epoch_pairs
    from tempo_cli.data.sequences import load_frame_store
    from tempo_cli.data.transforms import normalize
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.barlow_twins_loss import BarlowTwinsLoss
    from tempo_cli.models.projection_head import head_for
    from tempo_cli.runtime import seed_everything

    seed_everything(s.seed)
    backbone, head = build_resnet(s.backbone, s.init), head_for(s.backbone)
    params = [*backbone.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, fused=True)  # on CPU
    loss_fn = BarlowTwinsLoss(s.l, std=s.loss_std)
    store = load_frame_store(s.data, int(s.image_size))
    anchors, partners = epoch_pairs(store, s.pdf, s.proximity_param(), s.seed, 0)
    backbone.train()
    head.train()
    out = []
    for i in range(0, len(anchors) - 1, s.batch_size):
        x_a = normalize(store.frames[anchors[i : i + s.batch_size]])
        x_b = normalize(store.frames[partners[i : i + s.batch_size]])
        loss = loss_fn(head(backbone(x_a)), head(backbone(x_b)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


@pytest.mark.slow
def test_no_augmentation_keeps_todays_losses(frames: Path) -> None:
    from tempo_cli.pretrain import run

    s = tiny(frames, name="plain", augment="none", pairs="temporal", seed=3)
    got = run(s)
    want = reference_losses(s)
    assert len(want) == got["epochs"][0]["steps"] == 3
    assert losses(got)[0] == sum(want) / len(want)  # bit for bit (CPU)
    strong = run(tiny(frames, name="strong", augment="strong", seed=3))
    assert losses(strong) != losses(got)  # the augmentation did change the inputs


@pytest.mark.slow
def test_same_strong_trains_and_resumes_exactly(frames: Path) -> None:
    from tempo_cli.pretrain import run

    over = {"pairs": "same", "augment": "strong", "epochs": 2}
    straight = run(tiny(frames, name="straight", **over))
    assert len(straight["epochs"]) == 2 and all(np.isfinite(losses(straight)))
    part = run(tiny(frames, name="part", max_steps=4, **over))
    assert part["epochs"][-1]["partial"] is True
    whole = run(tiny(frames, name="part", resume=str(Path(part["last"])), **over))
    assert losses(whole) == losses(straight)
    config = json.loads((Path(os.environ["TEMPO_RUNS_DIR"]) / "part" / "config.json").read_text())
    assert (config["pairs"], config["augment"]) == ("same", "strong")


#: Image self-supervision must beat random init by this much (points of accuracy / 100).
SSL_MARGIN = 0.10


@pytest.mark.slow
def test_same_frame_strong_augmentation_beats_random_init_on_demo(cli, demo_root: Path) -> None:
    """`--pairs same --augment strong` (image self-supervision) learns the demo's signs: its
    linear probe at 5 labelled images per class beats the same random-init backbone.

    `--crop-scale 1`: at 32 px the sign fills most of the frame, so the paper's crops (down
    to 8% of the area) cut it apart and the features fall to chance (docs/pretrain.md,
    "Pairs and augmentation"); the recipe's flip, colour, grayscale, blur and solarisation
    all stay. The demo pre-training (4 epochs, 240 steps: the demo study's image-ssl arm);
    the probe lr of each arm is chosen on the demo's val split, as `tempo study` does."""
    r = cli(
        "pretrain", "--data", "demo", "--backbone", "resnet18", "--init", "random",
        "--image-size", "32", "--batch-size", "64", "--optimizer", "adamw", "--lr", "0.001",
        "--l", "0.005", "--proximity", "5", "--epochs", "4", "--pairs", "same", "--augment",
        "strong", "--crop-scale", "1", "--monitor", "none", "--device", "cpu", "--name",
        "image-ssl", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    runs = Path(os.environ["TEMPO_RUNS_DIR"])
    metrics = json.loads((runs / "image-ssl" / "metrics.json").read_text())
    assert [e["steps"] for e in metrics["epochs"]] == [60] * 4
    r = cli(
        "eval", "linear", "--path", metrics["checkpoint"], "--path", "random", "--backbone",
        "resnet18", "--data", "demo", "--samples-pc", "5", "--image-size", "32", "--lr",
        "0.001,0.01,0.1", "--device", "cpu", "--name", "image-ssl-eval", "--quiet",
    )  # fmt: skip
    assert r.code == 0, r.err
    # each arm at its own probe lr, chosen on val (random init's probe needs a larger one)
    results = json.loads((runs / "image-ssl-eval" / "metrics.json").read_text())["results"]
    chosen = [x for x in results if x["selected"]]
    assert len(chosen) == 2 and all(x["selected_on"] == "val" for x in chosen)
    acc = {x["checkpoint"] == "random": x["accuracy_final_mean"] for x in chosen}
    ssl, random = acc[False], acc[True]
    print(f"linear probe, 5 per class: same/strong {ssl:.3f} vs random init {random:.3f}")
    assert ssl >= random + SSL_MARGIN, (ssl, random)
