"""The docstring examples of every qec_kiln module are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import qec_kiln

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(qec_kiln.__path__, prefix="qec_kiln.")
    if m.name != "qec_kiln.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
