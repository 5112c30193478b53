"""Label-free signals of feature quality: RankMe, the spread of the features, collapse.

- RankMe (Garrido et al., "RankMe: Assessing the downstream performance of pretrained
  self-supervised representations by their rank", ICML 2023): with s_k the singular values
  of the (N, d) feature matrix, p_k = s_k / sum(s) + eps and RankMe = exp(-sum p_k log p_k),
  a smooth effective rank in [1, min(N, d)]. Higher ranks go with better downstream
  accuracy; a collapsed network gives ~1.
- `feature_std`: the mean over dimensions of the std of the L2-normalised features
  (SimSiam's collapse check): ~0 when every image maps to one point, about 1/sqrt(d) when
  the features spread over the sphere.
- `barlow_terms`: the Barlow Twins loss of a batch split into its on-diagonal
  (invariance) and off-diagonal (redundancy) sums, with the training's standardisation.

Collapse (`collapse_warning`): RankMe under COLLAPSE_RANK_FRACTION (1%) of min(N, d), or
the feature std under COLLAPSE_STD (1e-4, far below the ~3e-3 of an untrained ResNet's
pooled features, whose all-positive ReLU outputs sit close together on the sphere).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tempo_cli.models.barlow_twins_loss import STANDARDIZATIONS, off_diagonal

#: RankMe's epsilon (the paper's).
RANKME_EPS = 1e-7
#: Collapse: RankMe below this fraction of min(N, d) ...
COLLAPSE_RANK_FRACTION = 0.01
#: ... or the mean per-dimension std of the L2-normalised features below this.
COLLAPSE_STD = 1e-4


@torch.no_grad()
def rankme(features: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of features (N, d): exp(entropy of the normalised singular values).

    The singular values come from the eigenvalues of the smaller Gram matrix (min(N, d)
    square, float64): the same numbers as an SVD up to rounding in the smallest ones,
    which hardly weigh in the entropy, and many times faster on a CPU.
    """
    x = features.double()
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T  # (min(N, d),) * 2
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()  # (min(N, d),)
    total = s.sum()
    if not torch.isfinite(total) or total <= 0:
        return 1.0  # all-zero features: a single (degenerate) direction at most
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def feature_std(features: Tensor) -> float:
    """Mean over the d dimensions of the std over N of the L2-normalised features (N, d)."""
    z = F.normalize(features.double(), dim=1)
    return float(z.std(dim=0, correction=0).mean())


@torch.no_grad()
def barlow_terms(z_a: Tensor, z_b: Tensor, std: str = "unbiased") -> tuple[float, float]:
    """(on-diagonal sum, off-diagonal sum) of the Barlow Twins loss of z_a, z_b (N, D);
    the loss is on + lambda * off."""
    norm = STANDARDIZATIONS[std].fn
    za, zb = z_a.double(), z_b.double()
    c = norm(za).T @ norm(zb) / za.shape[0]  # (D, D)
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = off_diagonal(c).pow(2).sum()
    return float(on), float(off)


def collapse_warning(rank: float, std: float, n: int, d: int, what: str) -> str | None:
    """The one-line warning when `what`'s features (n samples of d dims) look collapsed."""
    floor = COLLAPSE_RANK_FRACTION * min(n, d)
    if rank >= floor and std >= COLLAPSE_STD:
        return None
    return (
        f"warning: the {what} features look collapsed (RankMe {rank:.2f} of at most "
        f"{min(n, d)}, feature std {std:.2e}); lower --lr or raise --l"
    )
