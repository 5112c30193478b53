"""Per-image predictions of every eval result: `runs/<name>/predictions.npz`.

Every linear, semisup and kNN result keeps, per probe run, the class it predicted for
each test image (and each val image, where the data has a val split and the protocol
scores it) after the last step, with the test labels and the label draw each run trained
on, so that a paired interval (`evaluate/paired_bootstrap.py`) can be recomputed from the
run folder alone. One plain NumPy archive, read with `allow_pickle=False`:

    meta                0-d str: JSON {"format": 1, "results": [RESULT, ...]}
    <i>.test_pred       int32 (R, M) run r's predicted class of test image m
    <i>.test_labels     int32 (M,)
    <i>.val_pred        int32 (R, V), <i>.val_labels int32 (V,)    when scored
    <i>.draws           int32 (D, n) the training images of each label draw (indices
                        into the training split's files, `data.labelled.list_split`
                        order), when labels were drawn

RESULT = {checkpoint, samples_pc, lr, selected, protocol, runs, test_files,
          labels: {split, drawn, resampled, seed, run_draw: [d of run 0, ...]}};
`<i>` is the result's index in metrics.json `results`. `test_files` fingerprints the test
split's files (names and labels), so two runs are paired only on the same test images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tempo_cli.errors import TempoError

if TYPE_CHECKING:
    from tempo_cli.evaluate.results import CurveResult
    from tempo_cli.evaluate.train_labels import DataRoot, TrainingLabels

#: The file beside metrics.json.
PREDICTIONS_FILE = "predictions.npz"
FORMAT = 1


@dataclass
class Predictions:
    """What each of R runs predicted after its last step.

    test: (R, M) predicted classes of the test split's images (`list_split` order);
    test_labels: (M,). val / val_labels: the same on the val split, or None.
    """

    test: Tensor
    test_labels: Tensor
    val: Tensor | None = None
    val_labels: Tensor | None = None


def head_predictions(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Predicted classes of H linear heads on features x.

    Args:
        x: (M, d) features; weight: (H, C, d); bias: (H, C) (any device).
    Returns:
        (H, M) int64 on CPU: argmax over the C classes of x @ weight[h].T + bias[h],
        computed in blocks of about CHUNK_BYTES of logits.
    """
    from tempo_cli.evaluate.probe_setup import CHUNK_BYTES

    x = x.to(device=weight.device, dtype=torch.float32)
    h, c, _ = weight.shape
    rows = max(1, min(x.shape[0], CHUNK_BYTES // (4 * c)))  # images per block (one head)
    heads = max(1, CHUNK_BYTES // (4 * c * rows))
    out = torch.empty(h, x.shape[0], dtype=torch.long)
    for lo in range(0, h, heads):
        w, b = weight[lo : lo + heads], bias[lo : lo + heads, None, :]
        for i in range(0, x.shape[0], rows):
            logits = torch.einsum("md,hcd->hmc", x[i : i + rows], w) + b
            out[lo : lo + heads, i : i + rows] = logits.argmax(dim=2).cpu()
    return out


@dataclass(frozen=True)
class ResultPredictions:
    """One result's predictions as read back from predictions.npz (see the module doc)."""

    meta: dict[str, Any]
    test_pred: np.ndarray  # (R, M)
    test_labels: np.ndarray  # (M,)
    val_pred: np.ndarray | None = None  # (R, V)
    val_labels: np.ndarray | None = None
    draws: np.ndarray | None = None  # (D, n)

    @property
    def checkpoint(self) -> str:
        return str(self.meta["checkpoint"])

    @property
    def samples_pc(self) -> int | None:
        return self.meta["samples_pc"]

    @property
    def selected(self) -> bool:
        return bool(self.meta.get("selected", True))

    @property
    def run_draw(self) -> np.ndarray:
        """(R,) the label draw each run trained on (all 0: one set of labels)."""
        return np.asarray(self.meta["labels"]["run_draw"], dtype=np.int64)

    def correct(self) -> np.ndarray:
        """(R, M) bool: run r classified test image m correctly."""
        return self.test_pred == self.test_labels[None, :]


def split_fingerprint(root: DataRoot, split: str) -> str:
    """sha256 (16 hex digits) of a split's file names and labels, in `list_split` order."""
    from tempo_cli.data.labelled import list_split

    files = list_split(root, split)
    text = "\n".join(
        f"{_name(p, files.root)}\t{files.class_names[int(y)]}"
        for p, y in zip(files.paths, files.labels.tolist(), strict=True)
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _name(path: Path, root: Path) -> str:
    """`path` relative to the data's root where it lies below it (else as it is)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _labels_meta(labels: TrainingLabels, runs: int) -> dict[str, Any]:
    """Where each run's training labels came from (the draw index of every run)."""
    run_draw = [r if labels.resampled else 0 for r in range(runs)]
    return {
        "split": labels.split,
        "drawn": labels.drawn,
        "resampled": labels.resampled,
        "seed": labels.seed,
        "run_draw": run_draw,
    }


class PredictionsFile:
    """Collects the predictions of an eval run's results and (re)writes the file.

    `add` one entry per metrics.json result, in the same order (a result without
    predictions keeps its index: no arrays, `"kept": false`); `write` after each task,
    atomically, so an interrupted run keeps the predictions of the results it recorded.
    """

    def __init__(self, path: Path, root: DataRoot) -> None:
        self.path = path
        self.test_files = split_fingerprint(root, "test")
        self.results: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, res: CurveResult, labels: TrainingLabels) -> None:
        i = len(self.results)
        p = res.predictions
        meta: dict[str, Any] = {
            "checkpoint": res.checkpoint,
            "samples_pc": res.samples_pc,
            "lr": res.lr,
            "selected": res.selected,
            "protocol": res.protocol,
            "runs": res.runs,
            "test_files": self.test_files,
            "labels": _labels_meta(labels, res.runs),
            "kept": p is not None,
        }
        self.results.append(meta)
        if p is None:
            return
        self.arrays[f"{i}.test_pred"] = _int32(p.test)
        self.arrays[f"{i}.test_labels"] = _int32(p.test_labels)
        if p.val is not None and p.val_labels is not None:
            self.arrays[f"{i}.val_pred"] = _int32(p.val)
            self.arrays[f"{i}.val_labels"] = _int32(p.val_labels)
        if labels.subsets is not None:
            self.arrays[f"{i}.draws"] = _int32(torch.stack(list(labels.subsets)))

    def write(self) -> None:
        from tempo_cli.atomic import atomic_path

        meta = json.dumps({"format": FORMAT, "results": self.results})
        with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(meta), **self.arrays)


def _int32(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.int32).numpy()


def read_predictions(run_dir: str | Path) -> list[ResultPredictions]:
    """The kept predictions of an eval run folder, in metrics.json `results` order
    (results without predictions are left out). TempoError when the file is missing or
    unreadable."""
    path = Path(run_dir) / PREDICTIONS_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as e:
        raise TempoError(
            f"cannot read {path} ({e}); re-run the evaluation to keep its predictions"
        ) from e
    if meta.get("format") != FORMAT:
        raise TempoError(f"{path}: unknown predictions format {meta.get('format')!r}")
    out = []
    for i, m in enumerate(meta["results"]):
        if not m.get("kept", True):
            continue
        out.append(
            ResultPredictions(
                meta=m,
                test_pred=arrays[f"{i}.test_pred"],
                test_labels=arrays[f"{i}.test_labels"],
                val_pred=arrays.get(f"{i}.val_pred"),
                val_labels=arrays.get(f"{i}.val_labels"),
                draws=arrays.get(f"{i}.draws"),
            )
        )
    return out


def find_result(
    results: Sequence[ResultPredictions], checkpoint: str | None, samples_pc: int | None
) -> ResultPredictions | None:
    """The selected result (the chosen lr of a grid) of `checkpoint` (None: the only
    checkpoint) at `samples_pc`, or None."""
    for r in results:
        if r.selected and r.samples_pc == samples_pc and checkpoint in (None, r.checkpoint):
            return r
    return None
