"""The feature sets of one evaluation task by role: `Splits(train, test, val)`.

`feature_splits` asks a `FeatureSource` for them (the training split, test/ and, when the
root has one, the split the choices are made on) and names them, so that callers read
`splits.val` where they would index a list.
"""

from __future__ import annotations

from typing import NamedTuple

from tempo_cli.evaluate.features import TEST_SPLIT, FeatureSet, FeatureSource


class Splits(NamedTuple):
    """train: the training role; test: scored; val: scored like test, where choices are
    made (None when the task has no validation split)."""

    train: FeatureSet
    test: FeatureSet
    val: FeatureSet | None = None

    def scored(self) -> tuple[FeatureSet, ...]:
        """(test, val) or (test,): the sets a model trained on `train` is scored on."""
        return (self.test,) if self.val is None else (self.test, self.val)


def feature_splits(
    source: FeatureSource, train_split: str, val_split: str | None = None, run: int = 0
) -> Splits:
    """`source`'s features of `train_split`, test/ and `val_split` (when given) for `run`."""
    others = (TEST_SPLIT,) + ((val_split,) if val_split else ())
    train, test, *val = source.sets(train_split, others, run=run)
    return Splits(train, test, val[0] if val else None)
