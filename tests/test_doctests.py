"""The `>>>` examples in docstrings and on the docs site are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def with_examples(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """The files that have `>>>` examples (each test then checks that some ran)."""
    return sorted(p for p in paths if ">>> " in p.read_text(encoding="utf-8"))


MODULES = [".".join(p.relative_to(ROOT / "microqwen").with_suffix("").parts)
           for p in with_examples(list((ROOT / "microqwen").rglob("*.py")))]  # e.g. bf16, lab.components
PAGES = with_examples(list((ROOT / "docs").rglob("*.md")))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"microqwen.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_page_examples(page: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
