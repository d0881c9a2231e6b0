"""Every public module, class, function and method of microqwen has a docstring (the API reference is made of them)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "microqwen"
MODULES = sorted(PACKAGE.rglob("*.py"))  # the package and its subpackage microqwen.lab


def public_definitions(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """Top-level functions and classes without a leading underscore, and their public methods."""
    found: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            found.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                found += [
                    (f"{node.name}.{item.name}", item)
                    for item in node.body
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_") and not _is_property(item)
                ]
    return found


def _is_property(function: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in function.decorator_list)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_its_public_names_have_docstrings(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    missing = [name for name, node in public_definitions(tree) if not ast.get_docstring(node)]  # type: ignore[arg-type]
    assert missing == [], f"{path.name}: no docstring for {missing}"


def test_the_check_sees_a_missing_docstring() -> None:
    tree = ast.parse('"""Module."""\ndef f():\n    pass\nclass C:\n    """C."""\n    def m(self):\n        pass\n')
    assert [name for name, node in public_definitions(tree) if not ast.get_docstring(node)] == ["f", "C.m"]  # type: ignore[arg-type]
