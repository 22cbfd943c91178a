"""The import graph, checked from the source (ARCHITECTURE.md's rules stay true):

- no import circles between the project's packages;
- a floor imports only floors below it (core is the ground floor: it imports nothing of ours);
- ``analysis`` imports only ``results`` (it reads results, it never runs a model);
- no source file over ~450 lines.

Imports inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package -> the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "results": {"core"},
    "world": {"core"},
    "backbones": {"core"},
    "priors": {"core"},
    "estimators": {"core"},
    "evaluation": {"core", "world", "backbones", "results"},
    "benchmark": {
        "core",
        "results",
        "world",
        "backbones",
        "priors",
        "estimators",
        "evaluation",
        "analysis",  # the CLI prints summaries and writes reports
    },
    "analysis": {"results"},
}
PACKAGES = set(ALLOWED)
MAX_LINES = 450


def _sources():
    for package in sorted(PACKAGES):
        yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & PACKAGES


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for path in _sources():
        package = path.relative_to(ROOT).parts[0]
        graph[package] |= _imports(path) - {package}
    return graph


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_file_imports_only_lower_floors(path):
    package = path.relative_to(ROOT).parts[0]
    bad = _imports(path) - {package} - ALLOWED[package]
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (floor '{package}')"


def test_no_package_circles():
    graph = _graph()
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if seen.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join([*stack, node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])
        seen[node] = 2

    for node in sorted(graph):
        visit(node, [])


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_over_450_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (split it by job)"


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: a core module importing benchmark is caught."""
    bad = tmp_path / "core_mod.py"
    bad.write_text("def f():\n    from benchmark.cli import main\n")
    assert _imports(bad) == {"benchmark"}
