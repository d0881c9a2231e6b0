"""microqwen/ imports the Python standard library and nothing else, and stays 3.9-compatible."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
import sysconfig

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "microqwen"
MODULES = sorted(PACKAGE.rglob("*.py"))  # the package and its subpackage microqwen.lab


def is_stdlib(name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    if names is not None:
        return name in names
    if name in sys.builtin_module_names:  # 3.9 (PyPy): compiled into the interpreter
        return True
    spec = importlib.util.find_spec(name)  # else: where would it be imported from?
    if spec is None or spec.origin is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    return spec.origin.startswith(sysconfig.get_paths()["stdlib"]) and "site-packages" not in spec.origin


def imported_modules(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.append(node.module.split(".")[0])
    return names


def test_the_package_has_modules() -> None:
    assert len(MODULES) >= 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_are_standard_library_only(path: pathlib.Path) -> None:
    outside = [name for name in imported_modules(path) if name != "__future__" and not is_stdlib(name)]
    assert outside == [], f"{path.name} imports {outside} from outside the standard library"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_postpones_annotations_for_python_3_9(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    futures = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "__future__"]
    assert any(alias.name == "annotations" for node in futures for alias in node.names)


def test_guard_catches_a_third_party_import(tmp_path: pathlib.Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import numpy\nfrom regex import compile\nimport os\nfrom . import bf16\n")
    assert [name for name in imported_modules(module) if not is_stdlib(name)] == ["numpy", "regex"]
