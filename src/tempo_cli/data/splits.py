"""Seeded, stratified, group-aware train / val / test splits of labelled images.

`make_split(items, options)` gives every item (class, relative path, group) one split name.
It is a pure function of the items, `SplitOptions.seed` and `SplitOptions.fractions`: the
same files listed by a class-folder tree or by a manifest split the same way (it depends on
the sorted order of the relative paths, so a common prefix such as `../photos/` changes
nothing). No torch here: settings and the CLI import it.

Without groups, each class is split on its own (so adding a class never moves another's
images): its images, sorted by path, are shuffled by a generator seeded with (seed, class);
val and test take `round(fraction x n)` images each (halves round up), at least 1 each when
their fraction is above 0, and train keeps the rest (at least 1; when val + test would leave
it none, the larger of them gives one back). A class with fewer images than splits -> exit 2.

With groups (a group: one video, session or person; an image without one is a group of its
own), whole groups go to one split, so a group never straddles two. Groups are shuffled
(seeded), then, for the classes with the fewest groups first, each split the class still
lacks takes one of its unassigned groups; the remaining groups, largest first, go where the
split is furthest below its fraction of all images. A class whose groups are too few for the
splits -> exit 2 naming it and its group count.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tempo_cli.errors import UsageError

TRAIN, VAL, TEST = "train", "val", "test"
#: The made splits, in the order fractions are given.
MADE_SPLITS = (TRAIN, VAL, TEST)
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
FRACTIONS_OPTION = "--split-fractions"
GROUP_OPTION = "--group-by"


@dataclass(frozen=True)
class SplitOptions:
    """How a split is made where the data gives none.

    fractions: (train, val, test), each in [0, 1], summing to 1; train and test > 0.
    seed: the split's seed (`--split-seed`).
    group_by: `--group-by REGEX` on file names (first capture group = the group), or None.
    """

    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0
    group_by: str | None = None

    def describe(self) -> dict[str, object]:
        return {"fractions": list(self.fractions), "seed": self.seed, "group_by": self.group_by}


@dataclass(frozen=True)
class SplitItem:
    """One labelled image: its class, its path relative to the data root (POSIX), its group
    (None: the image is a group of its own)."""

    label: str
    rel: str
    group: str | None = None


def parse_fractions(value: object) -> tuple[float, float, float]:
    """`"0.6,0.2,0.2"` (or a list) -> (0.6, 0.2, 0.2); ValueError saying what is allowed."""
    rule = (
        "TRAIN,VAL,TEST: three fractions >= 0 that sum to 1, train and test above 0 "
        "(e.g. 0.6,0.2,0.2; 0.8,0,0.2 makes no val)"
    )
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        parts = tuple(float(str(v).strip()) for v in items)
    except ValueError:
        raise ValueError(rule) from None
    if len(parts) != 3 or any(not 0 <= p <= 1 for p in parts):
        raise ValueError(rule)
    if abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0 or parts[2] <= 0:
        raise ValueError(rule)
    train, val, test = parts
    return train, val, test


def fractions_text(fractions: Sequence[float]) -> str:
    return ",".join(f"{f:g}" for f in fractions)


def check_group_regex(value: str) -> str:
    """A `--group-by` pattern: it must compile and have a capture group (ValueError)."""
    try:
        pattern = re.compile(value)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    if pattern.groups < 1:
        raise ValueError("a regular expression with a capture group, e.g. '^(.+?)_' ")
    return value


def group_of(pattern: re.Pattern[str], name: str) -> str | None:
    """The group of a file name under `--group-by` (first capture group; None: no match)."""
    m = pattern.search(name)
    return None if m is None or m.group(1) is None else m.group(1)


def _rng(*key: object) -> random.Random:
    text = "tempo.split:" + ":".join(str(k) for k in key)
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _active(fractions: Sequence[float]) -> list[str]:
    """The splits that get images, in the order they are filled when scarce."""
    return [s for s, f in zip(MADE_SPLITS, fractions, strict=True) if f > 0]


def split_counts(n: int, fractions: Sequence[float]) -> dict[str, int]:
    """Images of a class of `n` per split (module doc's rounding); n >= number of splits."""
    val = max(1, int(fractions[1] * n + 0.5)) if fractions[1] > 0 else 0
    test = max(1, int(fractions[2] * n + 0.5))
    while n - val - test < 1:
        if val > 1 and val >= test:
            val -= 1
        else:
            test -= 1
    return {TRAIN: n - val - test, VAL: val, TEST: test}


def make_split(items: Sequence[SplitItem], options: SplitOptions) -> list[str]:
    """One split name per item (module doc). UsageError for a class too small to split."""
    if any(item.group is not None for item in items):
        return _grouped(items, options)
    by_class: dict[str, list[int]] = {}
    for k, item in enumerate(items):
        by_class.setdefault(item.label, []).append(k)
    need = len(_active(options.fractions))
    out = [""] * len(items)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda k: items[k].rel)
        if len(members) < need:
            raise UsageError(
                FRACTIONS_OPTION,
                fractions_text(options.fractions),
                f"class {label!r} has {len(members)} image(s); a split into "
                f"{', '.join(_active(options.fractions))} needs at least {need} per class",
            )
        _rng(options.seed, "class", label).shuffle(members)
        counts = split_counts(len(members), options.fractions)
        order = [TEST] * counts[TEST] + [VAL] * counts[VAL] + [TRAIN] * counts[TRAIN]
        for k, split in zip(members, order, strict=True):
            out[k] = split
    return out


def _grouped(items: Sequence[SplitItem], options: SplitOptions) -> list[str]:
    keys = [item.group if item.group is not None else "\0" + item.rel for item in items]
    size: dict[str, int] = {}
    classes: dict[str, set[str]] = {}
    for key, item in zip(keys, items, strict=True):
        size[key] = size.get(key, 0) + 1
        classes.setdefault(key, set()).add(item.label)
    order = sorted(size)
    _rng(options.seed, "groups").shuffle(order)
    rank = {g: r for r, g in enumerate(order)}
    of_class: dict[str, list[str]] = {}
    for g in order:
        for label in classes[g]:
            of_class.setdefault(label, []).append(g)
    splits = _active(options.fractions)
    assign: dict[str, str] = {}
    for label in sorted(of_class, key=lambda c: (len(of_class[c]), c)):
        groups = of_class[label]
        for split in [s for s in (TEST, VAL, TRAIN) if s in splits]:
            if any(assign.get(g) == split for g in groups):
                continue
            free = [g for g in groups if g not in assign]
            if not free:
                raise _too_few_groups(label, len(groups), splits, options)
            assign[free[0]] = split
    fractions = dict(zip(MADE_SPLITS, options.fractions, strict=True))
    have = {s: 0 for s in splits}
    for g, s in assign.items():
        have[s] += size[g]
    total = len(items)
    for g in sorted((g for g in order if g not in assign), key=lambda g: (-size[g], rank[g])):
        split = max(splits, key=lambda s: fractions[s] * total - have[s])
        assign[g] = split
        have[split] += size[g]
    return [assign[key] for key in keys]


def _too_few_groups(label: str, count: int, splits: list[str], options: SplitOptions) -> UsageError:
    why = (
        f"class {label!r} has {count} group(s)"
        if count < len(splits)
        else f"class {label!r}: its {count} groups are taken by other classes' splits"
    )
    option, value = (
        (GROUP_OPTION, options.group_by)
        if options.group_by
        else (FRACTIONS_OPTION, fractions_text(options.fractions))
    )
    return UsageError(
        option,
        value,
        f"{why}; a grouped split into {', '.join(splits)} needs a group of each class in "
        "every split (add groups, or make no val with e.g. 0.8,0,0.2)",
    )
