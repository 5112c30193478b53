"""Perturbations of `tempo explain adversarial`: random noise (the study), FGSM, PGD.

Attacks are small registered objects: `ATTACKS` maps the `--attack` name to an `Attack`;
adding one is a class with `perturb()` plus one line in `ATTACKS` (and the name in the
settings' `Literal`, which a test keeps equal to `ATTACKS`). The noise models of
`--attack noise` are registered the same way: `NOISES` maps `--noise` to a `NoiseModel`.

All work in [0, 1] pixel space on a model that normalises inside (`PixelClassifier`), so
a noise level and an L-inf budget mean the same scale.

- `noise`: x' = clip(x + a(level) * u, 0, 1), u a unit pattern independent per pixel and
  colour channel, drawn once per image from a generator seeded by (seed, image index) and
  scaled per level, so a noisy image does not depend on the batch size and the figure
  shows one noise pattern growing.
  `--noise gaussian` (default): u ~ N(0, 1), a = `--noise-scale` x level (0.3: the
  study's noise as measured on its published figures, SPEC.md; an estimate).
  `--noise uniform`: u ~ U[-1, 1], a = level (tempo's earlier model; it lies inside the
  L-inf ball of budget `level`, and is about 1.9x stronger than the study's).
- `fgsm`, `pgd`: captum.robust, untargeted, on the true class (the clean prediction where
  the model has no such class). PGD: `steps` steps of 2.5 * eps / steps, no random start
  (deterministic); per image the first misclassified iterate is kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tempo_cli.settings.explain import ExplainAdversarialSettings


def _generator(index: int, seed: int) -> torch.Generator:
    """The generator of image `index`'s noise: one stream per (seed, index)."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(index))
    return g


def noise_pattern(index: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform [-1, 1] noise of `shape` for image `index` (seeded by seed and index)."""
    return torch.rand(shape, generator=_generator(index, seed)) * 2.0 - 1.0


def gaussian_pattern(index: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise of `shape` for image `index` (seeded by seed and index)."""
    return torch.randn(shape, generator=_generator(index, seed))


def add_noise(x: torch.Tensor, patterns: torch.Tensor, level: float) -> torch.Tensor:
    """clip(x + level * patterns, 0, 1); x, patterns (N, 3, H, W)."""
    return (x + level * patterns).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class AttackOptions:
    """What an attack takes beyond the images: `--seed`, `--steps`, `--noise[-scale]`."""

    seed: int
    steps: int
    noise: str
    noise_scale: float

    @classmethod
    def from_settings(cls, settings: ExplainAdversarialSettings) -> AttackOptions:
        return cls(
            seed=settings.seed,
            steps=settings.steps,
            noise=settings.noise,
            noise_scale=settings.noise_scale,
        )

    @classmethod
    def default(cls, **changes: Any) -> AttackOptions:
        """The command's defaults (written once, in the settings) with `changes`."""
        fields = ExplainAdversarialSettings.model_fields
        values = {name: fields[name].default for name in cls.__dataclass_fields__}
        return cls(**{**values, **changes})


class NoiseModel(ABC):
    """A `--noise`: the unit pattern of one image, and its amplitude at a level."""

    @abstractmethod
    def pattern(self, index: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """The unit pattern of image `index`, `shape` (3, H, W), seeded by (seed, index)."""

    @abstractmethod
    def amplitude(self, level: float, scale: float) -> float:
        """The factor of the pattern at `level` (`scale`: `--noise-scale`)."""

    @abstractmethod
    def metrics(self, scale: float) -> dict[str, Any]:
        """What metrics.json records of the noise."""


class GaussianNoise(NoiseModel):
    """N(0, (scale * level)^2) per pixel and channel: the study's noise (estimated)."""

    def pattern(self, index, shape, seed) -> torch.Tensor:
        return gaussian_pattern(index, shape, seed)

    def amplitude(self, level: float, scale: float) -> float:
        return scale * level

    def metrics(self, scale: float) -> dict[str, Any]:
        return {"noise": "gaussian", "noise_scale": scale}


class UniformNoise(NoiseModel):
    """U[-level, level] per pixel and channel: tempo's earlier model (no scale)."""

    def pattern(self, index, shape, seed) -> torch.Tensor:
        return noise_pattern(index, shape, seed)

    def amplitude(self, level: float, scale: float) -> float:
        return level

    def metrics(self, scale: float) -> dict[str, Any]:
        return {"noise": "uniform", "noise_scale": None}


NOISES: dict[str, NoiseModel] = {"gaussian": GaussianNoise(), "uniform": UniformNoise()}


class Attack(ABC):
    """An `--attack`: how a batch is perturbed at one level, and how the level is named."""

    #: the level in tables and their titles ("Accuracy against <level_name>")
    level_name: ClassVar[str]
    #: the x axis of the accuracy plot
    axis_label: ClassVar[str]
    #: the titles of the per-image figure ("<figure_label>: 0.1")
    figure_label: ClassVar[str]
    #: True when each model gets its own perturbed images (gradient attacks)
    per_model_images: ClassVar[bool] = True

    @abstractmethod
    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        level: float,
        *,
        indices: Sequence[int],
        options: AttackOptions,
    ) -> torch.Tensor:
        """Perturbed images in [0, 1] (N, 3, H, W).

        Args:
            model: [0, 1] pixels (N, 3, H, W) -> logits (N, C), eval mode.
            x: [0, 1] pixels (N, 3, H, W); y: true classes (N,), -1 where the model has
                no such class (or the images have no labels).
            level: noise level or L-inf budget; indices: the images' positions in the
                split; options: seed, PGD steps, noise model.
        """

    def metrics(self, options: AttackOptions) -> dict[str, Any]:
        """What metrics.json records beyond the levels."""
        return {}


class Noise(Attack):
    """Per-pixel random colour noise (the study's "adversarial attack"), `--noise` model."""

    level_name = "noise level"
    axis_label = "noise level"
    figure_label = "Noise level"
    per_model_images = False  # one pattern per image, the same for every model

    def perturb(self, model, x, y, level, *, indices, options) -> torch.Tensor:
        noise = NOISES[options.noise]
        shape = tuple(x.shape[1:])
        patterns = torch.stack([noise.pattern(i, shape, options.seed) for i in indices])
        return add_noise(x, patterns.to(x.device), noise.amplitude(level, options.noise_scale))

    def metrics(self, options: AttackOptions) -> dict[str, Any]:
        return NOISES[options.noise].metrics(options.noise_scale)


class _Gradient(Attack):
    """An untargeted gradient attack on the true class (the clean prediction if unknown)."""

    axis_label = "epsilon (L-inf, [0, 1] pixels)"

    def perturb(self, model, x, y, level, *, indices, options) -> torch.Tensor:
        if level <= 0:
            return x.clone()
        x = x.detach()
        if bool((y < 0).any()):
            with torch.no_grad():
                y = torch.where(y >= 0, y, model(x).argmax(1))
        return self.attack(model, x, y, level, options.steps)

    @abstractmethod
    def attack(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int
    ) -> torch.Tensor:
        """Adversarial images within L-inf `eps` of x (N, 3, H, W), eps > 0."""


class FGSM(_Gradient):
    """captum.robust FGSM: one signed-gradient step of size eps."""

    level_name = "FGSM epsilon (L-inf)"
    figure_label = "FGSM epsilon"

    def attack(self, model, x, y, eps, steps) -> torch.Tensor:
        from captum.robust import FGSM as CaptumFGSM

        fgsm = CaptumFGSM(model, lower_bound=0.0, upper_bound=1.0)
        return fgsm.perturb(x.clone().requires_grad_(True), epsilon=eps, target=y).detach()


class PGD(_Gradient):
    """captum.robust PGD's iteration, keeping per image the first misclassified iterate.

    The final iterate alone can step back out of a misclassified region when steps are
    large, which made accuracy rise with the budget.
    """

    level_name = "PGD epsilon (L-inf)"
    figure_label = "PGD epsilon"

    def attack(self, model, x, y, eps, steps) -> torch.Tensor:
        from captum.robust import PGD as CaptumPGD

        pgd = CaptumPGD(model, lower_bound=0.0, upper_bound=1.0)
        step_size = 2.5 * eps / steps
        adv = x.clone()
        best = x.clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(steps):
            adv = pgd.fgsm.perturb(adv.requires_grad_(True), step_size, y)
            adv = pgd.bound(x + torch.clamp(adv - x, -eps, eps)).detach()
            with torch.no_grad():
                wrong = model(adv).argmax(1) != y
            new = wrong & ~fooled
            best[new] = adv[new]
            fooled |= new
        best[~fooled] = adv[~fooled]
        return best

    def metrics(self, options: AttackOptions) -> dict[str, Any]:
        return {"pgd_steps": options.steps}


ATTACKS: dict[str, Attack] = {"noise": Noise(), "fgsm": FGSM(), "pgd": PGD()}
