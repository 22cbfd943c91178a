"""Every ``>>>`` example in the source packages runs (``make test`` runs this file): one case
per module whose source holds an example, found by reading the files, so a new module's
examples are picked up without a list to keep."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the source packages: top-level folders with an __init__.py, tests excluded
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


def modules_with_examples() -> list[str]:
    """Dotted names of the modules whose source holds a ``>>>`` line."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            if any(line.lstrip().startswith(">>>") for line in lines):
                rel = path.relative_to(ROOT).with_suffix("")
                parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
                names.append(".".join(parts))
    return names


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert len(MODULES) >= 30 and "core.interfaces" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module)
    assert tried > 0, f"{name}: its >>> lines are not in a docstring doctest collects"
    assert failures == 0
