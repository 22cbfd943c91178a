"""The repository's scripts (scripts/*.py, not a package) as modules, for tests that call
their functions or ``main(argv)`` in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """A fresh module of ``scripts/<name>.py`` (executed once per call).

    >>> load_script("verdict_table").BEGIN
    '<!-- verdict-table -->'
    """
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
