"""Settings of `tempo eval linear | semisup | knn` (CLI.md; protocol facts in SPEC.md).

`path` may name several checkpoints and `samples_pc` several splits: one call evaluates
every (checkpoint, samples per class) pair. `samples_pc` is kept as a canonical string
("1,5,10", "full" = the whole `train` split) so that it reads the same from the command
line, `TEMPO_SAMPLES_PC=1,5` and a TOML file (`samples_pc = [1, 5]` or `"1,5"`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from tempo_cli.settings.base import (
    AUTO,
    Backbone,
    Device,
    RecordedImageSize,
    device_field,
    image_size_field,
    recipe_field,
)
from tempo_cli.settings.data import SplitSettings

#: Tokens of `--samples-pc` that mean the full `train` split.
FULL_TOKENS = ("full", "all", "none", "train")
#: `--image-size auto` for a checkpoint that records no input size (the reference protocol).
IMAGE_SIZE = 128
ImageSize = image_size_field(8, 1024)


def parse_samples_pc(value: str | None) -> list[int | None]:
    """`"1,5,full"` -> `[1, 5, None]` (None = the full `train` split); None -> `[None]`."""
    if value is None:
        return [None]
    out: list[int | None] = []
    for token in str(value).split(","):
        token = token.strip().lower()
        if not token:
            continue
        out.append(None if token in FULL_TOKENS else int(token))
    return out or [None]


def _canonical_samples_pc(value: Any) -> str | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    tokens: list[str] = []
    for item in items:
        token = str(item).strip().lower()
        if not token:
            continue
        if token in FULL_TOKENS or item is None:
            token = "full"
        else:
            try:
                n = int(token)
            except ValueError:
                raise ValueError(
                    "a comma-separated list of samples per class, e.g. 1,5,10,15,20 "
                    "(or 'full' for the whole train split)"
                ) from None
            if n < 1:
                raise ValueError("samples per class must be >= 1 (or 'full')")
            token = str(n)
        if token not in tokens:
            tokens.append(token)
    if not tokens:
        raise ValueError("give at least one value, e.g. 1,5,10,15,20")
    return ",".join(tokens)


def parse_lr_grid(value: str) -> tuple[float, ...]:
    """`"0.001,0.01"` -> (0.001, 0.01) (the canonical string of `--lr`)."""
    return tuple(float(t) for t in str(value).split(","))


def _canonical_lr_grid(value: Any) -> str:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    lrs: list[float] = []
    for item in items:
        token = str(item).strip()
        if not token:
            continue
        try:
            lr = float(token)
        except ValueError:
            lr = float("nan")
        if not lr > 0 or lr == float("inf"):
            raise ValueError("positive learning rates, comma-separated: 0.01 or 0.001,0.01,0.1")
        if lr not in lrs:
            lrs.append(lr)
    if not lrs:
        raise ValueError("give at least one learning rate, e.g. 0.01")
    return ",".join(repr(v) for v in lrs)


def parse_bn_batch_size(value: str) -> tuple[int, int] | None:
    """`"24,10"` -> (24, 10); `"auto"` -> None."""
    if value == AUTO:
        return None
    train, test = (int(v) for v in value.split(","))
    return train, test


def _checkpoint_list(value: Any) -> list[str]:
    """`--path` given once or repeated -> the non-empty checkpoint specs, at least one."""
    if isinstance(value, str):
        value = [value]
    items = [str(v).strip() for v in value or [] if str(v).strip()]
    if not items:
        raise ValueError("give at least one checkpoint: a file, a model name, imagenet, random")
    return items


def _canonical_bn_batch_size(value: Any) -> str:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    tokens = [str(v).strip().lower() for v in items]
    if tokens == [AUTO]:
        return AUTO
    try:
        sizes = [int(t) for t in tokens]
    except ValueError:
        sizes = []
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError("TRAIN,TEST: two positive batch sizes, e.g. 24,10 (or auto)")
    return f"{sizes[0]},{sizes[1]}"


class EvalSettings(RecordedImageSize, SplitSettings):
    """Options every `tempo eval` protocol shares."""

    command: ClassVar[str] = "eval"
    fallback_image_size: ClassVar[int] = IMAGE_SIZE

    path: Annotated[list[str], NoDecode] = Field(
        description="Checkpoint to evaluate: a file, a name in the model dir, imagenet or random. "
        "Repeat to compare several."
    )
    data: str = Field(
        "asl",
        description="Labelled data: a dataset name, a root with train[-N]/ and test/ (and "
        "val/: selection), a class-folder tree or a manifest .csv (docs/data.md).",
    )
    recipe: str | None = recipe_field()
    samples_pc: Annotated[str, NoDecode] = Field(
        "full",
        description="Labelled samples per class: split train-N, else a seeded N-per-class "
        "draw from train/; a comma list sweeps (e.g. 1,5,10,15,20; 'full' = train).",
    )
    backbone: Backbone = Field("resnet34", description="Architecture of --path random|imagenet.")
    image_size: ImageSize = Field(
        AUTO,
        description="Shorter side resized to this, then center crop; auto = the size the "
        f"checkpoint records, else {IMAGE_SIZE}.",
    )
    seed: int = Field(0, description="Seed.")
    device: Device = device_field()
    bn_stats: Literal["running", "batch", "adapt"] = Field(
        "running",
        description="BatchNorm statistics: running (eval mode, standard), batch (the "
        "reference: train mode, seeded shuffled batches) or adapt (re-estimated on the train "
        "and test images, then eval mode; not semisup).",
    )
    bn_batch_size: str = Field(
        AUTO,
        description="BatchNorm batches TRAIN,TEST of --bn-stats batch|adapt; auto = "
        "--batch-size,10 for linear (24,10), 24,10 for knn, test 20 for semisup (which "
        "trains on --batch-size batches).",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> list[str]:
        return _checkpoint_list(value)

    @field_validator("samples_pc", mode="before")
    @classmethod
    def _samples_pc(cls, value: Any) -> str | None:
        return _canonical_samples_pc(value)

    @field_validator("bn_batch_size", mode="before")
    @classmethod
    def _bn_batch_size(cls, value: Any) -> str:
        return _canonical_bn_batch_size(value)

    def samples_pc_list(self) -> list[int | None]:
        """The splits to evaluate, in order: int = `train-N`, None = `train`."""
        return parse_samples_pc(self.samples_pc)

    def bn_batches(self) -> tuple[int, int] | None:
        """`--bn-batch-size` as (train, test); None = auto (the protocol's defaults)."""
        return parse_bn_batch_size(self.bn_batch_size)


class EvalHeadSettings(EvalSettings):
    """Options of the protocols that train a fresh linear head (linear, semisup)."""

    runs: int = Field(10, ge=1, le=1000, description="Repetitions with fresh heads.")
    lr: float = Field(0.01, gt=0, description="SGD learning rate.")
    resample_labels: bool = Field(
        False,
        description="Draw a new seeded N-per-class subset of train/ for every run (even "
        "where train-N/ exists), so the ± covers which images were labelled.",
    )
    save_model: str | None = Field(
        None,
        description="Write backbone + the best run's linear head + class names here (a "
        "classifier for `tempo explain`); several results get -<checkpoint>-<N> suffixes.",
    )
    save_samples_pc: str | None = Field(
        None,
        description="The one --samples-pc value whose result --save-model writes (e.g. "
        "full); default: every value's.",
    )

    @field_validator("save_samples_pc", mode="before")
    @classmethod
    def _one_saved_samples_pc(cls, value: Any) -> str | None:
        token = _canonical_samples_pc(value)
        if token is not None and "," in token:
            raise ValueError("one value of --samples-pc, e.g. full")
        return token

    @field_validator("save_samples_pc")
    @classmethod
    def _saved_samples_pc_evaluated(cls, value: str | None, info: ValidationInfo) -> str | None:
        swept = str(info.data.get("samples_pc") or "").split(",")
        if value is not None and "samples_pc" in info.data and value not in swept:
            raise ValueError(f"one value of --samples-pc ({','.join(swept)})")
        return value

    def saves(self, samples_pc: int | None) -> bool:
        """Whether --save-model writes the result at `samples_pc` (None = full)."""
        return self.save_samples_pc is None or parse_samples_pc(self.save_samples_pc) == [
            samples_pc
        ]


# Said once, for the fields whose defaults differ between linear and semisup.
_ITERATIONS = "SGD steps per run."
_WEIGHT_DECAY = "SGD weight decay."


class EvalLinearSettings(EvalHeadSettings):
    """`tempo eval linear`: frozen backbone, batched linear probes (SPEC.md)."""

    command: ClassVar[str] = "eval-linear"

    # The parent's float lr becomes a comma list here; a subclass may not narrow a field's
    # type in the type checker's eyes, though pydantic validates it as declared.
    lr: Annotated[str, NoDecode] = Field(  # type: ignore[assignment]
        "0.01",
        description="SGD learning rate; a comma list (e.g. 0.001,0.01,0.1) trains every lr's "
        "heads in one pass and chooses the best on val (test when the data has no val).",
    )
    iterations: int = Field(3000, ge=1, description=_ITERATIONS)
    batch_size: int = Field(24, ge=1, description="Training features per step.")
    weight_decay: float = Field(1e-4, ge=0, description=_WEIGHT_DECAY)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_grid(cls, value: Any) -> str:
        return _canonical_lr_grid(value)

    def lr_grid(self) -> tuple[float, ...]:
        """The learning rates of `--lr`, in the order given."""
        return parse_lr_grid(self.lr)


class EvalSemisupSettings(EvalHeadSettings):
    """`tempo eval semisup`: fine-tune all parameters with a fresh linear head (SPEC.md)."""

    command: ClassVar[str] = "eval-semisup"

    iterations: int = Field(200, ge=1, description=_ITERATIONS)
    batch_size: int = Field(128, ge=1, description="Training images per step.")
    weight_decay: float = Field(0.0, ge=0, description=_WEIGHT_DECAY)
    eval_every: int = Field(1, ge=1, description="Test accuracy every K steps.")

    @field_validator("bn_stats")
    @classmethod
    def _bn_stats(cls, value: str) -> str:
        # fine-tuning trains BatchNorm itself: re-estimated statistics would be overwritten
        if value == "adapt":
            raise ValueError(
                "adapt is taken by eval linear, eval knn and pretrain --eval; semisup "
                "fine-tunes BatchNorm itself: use running or batch"
            )
        return value


class EvalKnnSettings(EvalSettings):
    """`tempo eval knn`: weighted k-nearest-neighbour on L2-normalised frozen features."""

    command: ClassVar[str] = "eval-knn"

    k: int = Field(20, ge=1, description="Neighbours.")
    temperature: float = Field(0.07, gt=0, description="Vote weight exp(similarity / T).")
