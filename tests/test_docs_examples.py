"""The notebook examples in docs/ run as written (each page's ```python blocks, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if "```python" in p.read_text(encoding="utf-8"))
SLOW_PAGES = {"pretrain.md"}  # trains a few steps


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_docs_have_examples() -> None:
    """The pages that promise a notebook entry point keep one (so the test below runs)."""
    assert {p.name for p in PAGES} >= {"demo.md", "eval.md", "pretrain.md"}


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=[pytest.mark.slow] if p.name in SLOW_PAGES else []) for p in PAGES],
    ids=lambda p: p.name,
)
def test_docs_example_runs(
    page: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # runs/ of an example go to a temporary folder
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for k, code in enumerate(python_blocks(page)):
        exec(compile(code, f"{page.name}[python block {k}]", "exec"), namespace)
