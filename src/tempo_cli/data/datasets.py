"""`--data NAME|PATH` -> a dataset folder (CLI.md "Names and places")."""

from __future__ import annotations

from pathlib import Path

from tempo_cli import places
from tempo_cli.errors import TempoError


def resolve_dataset(value: str | Path) -> Path:
    """An existing path as given; `demo` generated on first use; other names under data_dir().

    Missing -> TempoError saying to run `tempo download asl` or to pass --data PATH.
    """
    p = Path(value).expanduser()
    if p.exists():
        return p
    name = str(value)
    if name.lower() == "demo":
        # Imported here: the demo generator pulls in drawing code only `demo` needs.
        from tempo_cli.data.demo import ensure_demo

        return ensure_demo()
    looks_like_path = isinstance(value, Path) or "/" in name or "\\" in name or name[:1] in ".~"
    if looks_like_path:
        raise TempoError(f"data path not found: {p}; check --data")
    found = places.resolve_data(name)
    if found.exists():
        return found
    raise TempoError(
        f"dataset {name!r} not found in {places.data_dir()}; run `tempo download asl` "
        "(or `tempo download demo`), or pass --data PATH"
    )
