"""The one loader of labelled images, in the three forms people have them.

Forms (`open_labelled` tells them apart; `--data NAME|PATH` accepts all three):

- `splits`: today's layout `<root>/{train,train-N,val,test}/<CLASS>/<image>`, used as it is.
- `tree`: `<root>/<CLASS>/...`, images directly in a class folder or in sub-folders of it;
  a sub-folder is a **group** (one video, session or person), named the same across classes
  (`A/alice/` and `B/alice/` are one group).
- `manifest`: a CSV file `path,label[,split][,group]`, paths relative to the file
  (`data.manifest`).

Where the data gives no split (a tree; a manifest without a split column) one is made with
`data.splits.make_split` from the `SplitOptions` (`--split-fractions`, `--split-seed`,
`--group-by`): train / val / test, stratified by class, groups never straddling two splits.

API (for every command that reads labelled images, e.g. `tempo embed`):

    from tempo_cli.data.labelled_data import open_labelled
    from tempo_cli.data.splits import SplitOptions

    data = open_labelled("mylabels", SplitOptions(seed=0))  # folder, .csv or dataset name
    data.form, data.how          # "splits"|"tree"|"manifest"; "given"|"manifest"|"seeded"
    data.splits()                # e.g. ["train", "val", "test"] (+ train-N folders)
    data.class_names             # the class index (data.labelled.class_index)
    files = data.files("test")   # data.labelled.SplitFiles: paths + labels, not decoded
    images = data.load("test", image_size=64)  # data.labelled.LabelledSplit (uint8)
    data.entries()               # every image: Entry(path, rel, label, split, group)
    data.describe()              # JSON-able summary: form, how, options, counts, groups

`settings.split_options()` of a command with the split fields (`settings/data.py`) gives its
`SplitOptions`; `data.labelled.list_split / load_split / available_splits / class_names`
take a `LabelledData` or a path (a path is opened with the default options).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_cli.data.frames import is_image
from tempo_cli.data.splits import (
    GROUP_OPTION,
    SplitItem,
    SplitOptions,
    group_of,
    make_split,
)
from tempo_cli.errors import TempoError, UsageError

_SPLIT_DIR = re.compile(r"^(train|test|val|train-\d+)$", re.IGNORECASE)
_LAYOUTS = "<root>/<CLASS>/<image>, <root>/{train,val,test}/<CLASS>/<image>, or a manifest .csv"


@dataclass(frozen=True)
class Entry:
    """One labelled image: the file, its path relative to the data's base folder (POSIX),
    class, split and group (None: none)."""

    path: Path
    rel: str
    label: str
    split: str
    group: str | None = None


@dataclass
class LabelledData:
    """Labelled images in one of the three forms (module doc), with their splits.

    source: what was given (a folder or a .csv); base: the folder file paths are relative to
    (the root, or the manifest's folder); how: given (split folders), manifest (its split
    column) or seeded (made with `options`).
    """

    source: Path
    base: Path
    form: str
    how: str
    options: SplitOptions
    class_names: list[str]
    _entries: list[Entry] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return str(self.source)

    def splits(self) -> list[str]:
        """The splits, in the order train, train-N, val, test."""
        from tempo_cli.data import labelled

        if self.form == "splits":
            return labelled.folder_splits(self.base)
        names = {e.split for e in self.entries()}
        return sorted(names, key=labelled.split_order)

    def files(self, split: str, option: str | None = None):  # -> labelled.SplitFiles
        """The files of `split` with their labels (class index order, then path)."""
        import torch

        from tempo_cli.data import labelled

        if self.form == "splits":
            return labelled.list_folder_split(self.base, split, option)
        index = {c: k for k, c in enumerate(self.class_names)}
        members = sorted(
            (e for e in self.entries() if e.split == split), key=lambda e: (index[e.label], e.rel)
        )
        if not members:
            raise labelled.unknown_split(self.source, split, self.splits(), option)
        labels = torch.tensor([index[e.label] for e in members], dtype=torch.int64)
        return labelled.SplitFiles(
            labels, list(self.class_names), [e.path for e in members], self.base, split
        )

    def load(self, split: str, image_size: int | None, quiet: bool = True, **kwargs: Any):
        """`data.labelled.read_split` of `files(split)`: uint8 images in memory."""
        from tempo_cli.data import labelled

        return labelled.read_split(self.files(split), image_size, quiet, **kwargs)

    def entries(self) -> list[Entry]:
        """Every image of every split (the split layout is listed on first use)."""
        if self._entries is None:
            # split folders: --group-by names groups to check (the split is given)
            pattern = re.compile(self.options.group_by) if self.options.group_by else None
            self._entries = []
            for split in self.splits():
                files = self.files(split)
                for path, k in zip(files.paths, files.labels.tolist(), strict=True):
                    rel = path.relative_to(self.base).as_posix()
                    group = group_of(pattern, path.name) if pattern else None
                    self._entries.append(Entry(path, rel, self.class_names[k], split, group))
        return self._entries

    def straddling(self) -> dict[str, list[str]]:
        """Groups with images in two or more of train / val / test (a given split can have
        them; a made one never does): group -> its splits."""
        from tempo_cli.data.labelled import split_order

        where: dict[str, set[str]] = {}
        for e in self.entries():
            if e.group is not None and e.split in ("train", "val", "test"):
                where.setdefault(e.group, set()).add(e.split)
        return {g: sorted(s, key=split_order) for g, s in sorted(where.items()) if len(s) > 1}

    @property
    def grouped(self) -> bool:
        return any(e.group is not None for e in self.entries())

    def describe(self) -> dict[str, Any]:
        """form, how the split was made, options (seeded), images per split and class, groups."""
        entries = self.entries()
        counts: dict[str, dict[str, int]] = {}
        for split in self.splits():
            per = Counter(e.label for e in entries if e.split == split)
            counts[split] = {c: per[c] for c in self.class_names if per[c]}
        groups = {e.group for e in entries if e.group is not None}
        out: dict[str, Any] = {
            "source": str(self.source),
            "form": self.form,
            "split": self.how,
            "classes": [c for c in self.class_names if any(c in v for v in counts.values())],
            "images": counts,
            "groups": len(groups) if groups else None,
        }
        if groups:
            out["groups_in_two_splits"] = len(self.straddling())
        if self.how == "seeded":
            out["options"] = self.options.describe()
        return out

    def manifest_rows(self, folder: Path) -> list[tuple[str, str, str, str | None]]:
        """(path relative to `folder`, label, split, group) of every image, for a manifest."""
        folder = Path(folder).resolve()
        return [
            (Path(os.path.relpath(e.path.resolve(), folder)).as_posix(), e.label, e.split, e.group)
            for e in self.entries()
        ]


def detect_form(path: Path, option: str = "--data") -> str:
    """splits, tree or manifest (module doc); UsageError for a root mixing two layouts."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UsageError(option, str(path), f"a folder or a manifest .csv ({_LAYOUTS})")
        return "manifest"
    if not path.is_dir():
        raise TempoError(
            f"dataset folder not found: {path}; check --data (or run `tempo download`)"
        )
    dirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    split_dirs = sorted(p.name for p in dirs if _SPLIT_DIR.match(p.name))
    if not split_dirs:
        return "tree"
    from tempo_cli.data.labelled import folder_class_names

    classes = folder_class_names(path)
    mixed = sorted(p.name for p in dirs if p.name in classes and p.name not in split_dirs)
    if mixed:
        raise UsageError(
            option,
            str(path),
            f"it mixes split folders ({', '.join(split_dirs)}) and class folders "
            f"({', '.join(mixed[:5])}); with split folders the layout expected is "
            f"{path}/<split>/<CLASS>/<image>: move the class folders into one of them",
        )
    return "splits"


def open_labelled(
    value: str | Path | LabelledData,
    options: SplitOptions | None = None,
    option: str = "--data",
) -> LabelledData:
    """Labelled images from a dataset name, a folder or a manifest (module doc).

    Checks everything before returning (nothing is decoded): TempoError (exit 1) for a
    missing root, a class folder without images; UsageError (exit 2) for a bad manifest row,
    a mixed root, a class too small to split, a `--group-by` that misses files.
    """
    if isinstance(value, LabelledData):
        return value
    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.labelled import class_index, folder_class_names

    options = options or SplitOptions()
    path = resolve_dataset(value)
    form = detect_form(path, option)
    if form == "splits":
        names = class_index(folder_class_names(path))
        return LabelledData(path, path, form, "given", options, names)
    if form == "tree":
        items, paths = _tree_items(path)
        return _made(path, path, form, items, paths, options)
    return _from_manifest(path, options, option)


def _walk_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [p for name in sorted(filenames) if is_image(p := Path(dirpath) / name)]
    return found


def _tree_items(root: Path) -> tuple[list[SplitItem], list[Path]]:
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not class_dirs:
        raise TempoError(f"no class folders in {root} (expected {_LAYOUTS})")
    items: list[SplitItem] = []
    paths: list[Path] = []
    for class_dir in class_dirs:
        found = _walk_images(class_dir)
        if not found:
            raise TempoError(
                f"class folder {class_dir} holds no images (expected {class_dir}/<image> or "
                f"{class_dir}/<GROUP>/<image>); remove it or add its images"
            )
        for p in found:
            parts = p.relative_to(class_dir).parts
            group = parts[0] if len(parts) > 1 else None
            items.append(SplitItem(class_dir.name, p.relative_to(root).as_posix(), group))
            paths.append(p)
    return items, paths


def _regroup(items: list[SplitItem], paths: list[Path], pattern: str) -> list[SplitItem]:
    """Groups from `--group-by` on file names; UsageError when files match no group."""
    compiled = re.compile(pattern)
    groups = [group_of(compiled, p.name) for p in paths]
    misses = [p.name for p, g in zip(paths, groups, strict=True) if g is None]
    if misses:
        raise UsageError(
            GROUP_OPTION,
            pattern,
            f"{len(misses)} file name(s) have no group under it, e.g. {misses[0]!r}; the "
            "first capture group of a match names the group",
        )
    return [SplitItem(i.label, i.rel, g) for i, g in zip(items, groups, strict=True)]


def _made(
    source: Path,
    base: Path,
    form: str,
    items: list[SplitItem],
    paths: list[Path],
    options: SplitOptions,
) -> LabelledData:
    from tempo_cli.data.labelled import class_index

    if options.group_by is not None:
        items = _regroup(items, paths, options.group_by)
    splits = make_split(items, options)
    entries = [
        Entry(p, i.rel, i.label, s, i.group) for p, i, s in zip(paths, items, splits, strict=True)
    ]
    names = class_index({i.label for i in items})
    return LabelledData(source, base, form, "seeded", options, names, entries)


def _from_manifest(path: Path, options: SplitOptions, option: str) -> LabelledData:
    from tempo_cli.data.labelled import class_index
    from tempo_cli.data.manifest import read_manifest

    rows = read_manifest(path, option)
    base = path.parent.resolve()
    if rows[0].split is None:
        items = [SplitItem(r.label, r.path, r.group) for r in rows]
        return _made(path, base, "manifest", items, [r.file for r in rows], options)
    pattern = re.compile(options.group_by) if options.group_by else None
    entries = [
        Entry(
            r.file,
            r.path,
            r.label,
            r.split or "",
            group_of(pattern, r.file.name) if pattern else r.group,
        )
        for r in rows
    ]
    names = class_index({r.label for r in rows})
    return LabelledData(path, base, "manifest", "manifest", options, names, entries)
