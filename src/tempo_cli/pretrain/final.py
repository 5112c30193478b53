"""The end of a pre-training run: the final model file and `--eval`'s linear evaluation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tempo_cli import places
from tempo_cli.errors import UsageError
from tempo_cli.evaluate.config import PRETRAIN_EVAL_PROBE
from tempo_cli.models.checkpoint import load_model, save_checkpoint
from tempo_cli.models.projection_head import ProjectionHead
from tempo_cli.settings.pretrain import PretrainSettings


def final_model_path(save_model: str | None, run_dir: Path) -> Path:
    """`--save-model`: a bare name goes to the model directory, a path is used as given;
    without it the model goes to runs/<name>/model.pt."""
    if save_model is None:
        return run_dir / "model.pt"
    p = Path(save_model).expanduser()
    bare = not p.is_absolute() and len(p.parts) == 1 and not save_model.startswith(".")
    return places.model_dir() / save_model if bare else p


def find_labelled_root(data_path: Path) -> Path | None:
    """The dataset root holding train/ (or train-N/) and test/: `data_path` itself or, for
    a frames/ folder, the folder beside it; None when there is none."""
    candidates = [data_path] + ([data_path.parent] if data_path.name == "frames" else [])
    for root in candidates:
        if (root / "test").is_dir() and any(
            p.is_dir() and (p.name == "train" or p.name.startswith("train-"))
            for p in root.iterdir()
        ):
            return root
    return None


def labelled_root(data_path: Path) -> Path:
    """The dataset root holding train/ and test/ for `--eval` (beside frames/)."""
    root = find_labelled_root(data_path)
    if root is not None:
        return root
    raise UsageError(
        "--eval",
        str(data_path),
        "needs labelled splits (train/, test/) beside frames/ in --data; or evaluate "
        "the saved model with `tempo eval linear --path MODEL --data ROOT`",
    )


@dataclass
class FinalModel:
    """The trained backbone + head and the run's meta, as saved at the end."""

    arch: str
    backbone: nn.Module
    head: ProjectionHead
    image_size: int  # the frame side it was trained at
    meta: dict[str, Any]

    def product(self) -> dict[str, Any]:
        """The keyword arguments of `models.checkpoint.save_checkpoint` it is saved with."""
        return {
            "arch": self.arch,
            "backbone": self.backbone,
            "head": self.head,
            "image_size": self.image_size,
            "meta": self.meta,
        }

    def save(self, path: Path, **extra: Any) -> None:
        save_checkpoint(path, **self.product(), **extra)

    def evaluate_and_save(
        self,
        path: Path,
        eval_root: Path,
        s: PretrainSettings,
        device: torch.device,
        quiet: bool,
    ) -> dict[str, Any]:
        """`--eval`: linear evaluation of the saved model (PRETRAIN_EVAL_PROBE: 3 runs of
        3,000 iterations, batches of 10, SGD lr 0.01, the full train split); saves it again
        with the probe's linear head and class names; returns the evaluation record."""
        from tempo_cli.data.labelled import class_names
        from tempo_cli.evaluate.linear import evaluate_linear

        record, linear = evaluate_linear(
            load_model(path),
            eval_root,
            None,
            # SPEC.md's protocol inside pre-training, BatchNorm as --bn-stats says
            replace(PRETRAIN_EVAL_PROBE, seed=s.seed, bn_stats=s.bn_stats),
            image_size=self.image_size,
            device=device,
            quiet=quiet,
        )
        self.save(path, linear=linear, class_names=class_names(eval_root))
        return record
