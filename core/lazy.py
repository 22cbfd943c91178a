"""Lazy package exports: ``import pkg`` stays cheap, ``pkg.Name`` imports its module on use.

>>> __getattr__ = lazy_exports("mypkg", {"sqrt": "math"})
>>> __getattr__("sqrt")(4.0)
2.0
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package`` that resolves ``exports`` (name ->
    module) on first access (PEP 562)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
