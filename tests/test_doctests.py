"""Runs the examples in module docstrings, so documented behaviour stays true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("fleet", "tools", "supervisors", "graphs", "apps", "evals")


def _modules() -> list[str]:
    """Modules with at least one docstring example (the others have nothing to check)."""
    names = []
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        for name in [pkg, *(i.name for i in pkgutil.walk_packages(root.__path__, f"{pkg}."))]:
            tests = doctest.DocTestFinder().find(importlib.import_module(name))
            if any(t.examples for t in tests):
                names.append(name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
