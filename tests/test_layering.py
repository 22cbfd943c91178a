"""The import graph, checked from the source (docs/manual.md, "Developer guide"):

- no import circles between the project's packages, nor between its modules (inside a package
  too: a shared piece lives in the lower module);
- a floor imports only floors below it (core is the ground floor: it imports nothing of ours);
  inside ``benchmark`` the sub-packages have floors too (``SUB_ALLOWED``);
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
#: benchmark's parts, lowest first -> the parts they may import (besides themselves); the
#: seeded streams, the probe, one run, what drives runs (checks, sweeps, the CLIP data), the CLI
SUB_ALLOWED = {
    "benchmark.streams": set(),
    "benchmark.probe": {"benchmark.streams"},
    "benchmark.run": {"benchmark.streams", "benchmark.probe"},
    "benchmark.checks": {"benchmark.streams", "benchmark.probe", "benchmark.run"},
    "benchmark.sweep": {"benchmark.streams", "benchmark.probe", "benchmark.run"},
    "benchmark.clip_trajectories": {"benchmark.streams", "benchmark.probe", "benchmark.run"},
    "benchmark.cli": {
        "benchmark.streams",
        "benchmark.probe",
        "benchmark.run",
        "benchmark.checks",
        "benchmark.sweep",
        "benchmark.clip_trajectories",
    },
    "benchmark.__main__": {"benchmark.cli"},
}


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


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports (any depth, relative imports resolved): for
    ``from a.b import c`` the module ``a.b.c`` when it is one, else ``a.b``."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in modules:
                return ".".join(parts[:i])
        return None

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(resolve(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            out.update(resolve(f"{base}.{alias.name}") or resolve(base) for alias in node.names)
    return out - {None, name}


def _module_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    paths = [p for package in sorted(packages) for p in sorted((root / package).rglob("*.py"))]
    modules = {_module_name(p, root) for p in paths}
    return {_module_name(p, root): _module_imports(p, modules, root) for p in paths}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _part(module: str) -> str | None:
    """benchmark's part a module belongs to (``SUB_ALLOWED`` keys), None outside benchmark."""
    for part in SUB_ALLOWED:
        if module == part or module.startswith(part + "."):
            return part
    return None


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


def test_no_module_circles():
    """Lazy imports count: a circle through a function-level import is still a circle."""
    circles = _circles(_module_graph())
    assert not circles, "import circles between modules: " + "; ".join(map(str, circles))


def test_benchmark_parts_import_only_lower_parts():
    bad = []
    for module, imports in sorted(_module_graph().items()):
        part = _part(module)
        if module.startswith("benchmark.") and part is None:
            bad.append(f"{module} belongs to no part of SUB_ALLOWED")
            continue
        for target in sorted(imports):
            other = _part(target)
            if part and other and other != part and other not in SUB_ALLOWED[part]:
                bad.append(f"{module} imports {target} ('{part}' is below '{other}')")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_over_450_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (split it by job)"


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: a core module importing benchmark is caught."""
    bad = tmp_path / "core_mod.py"
    bad.write_text("def f():\n    from benchmark.cli.commands import main\n")
    assert _imports(bad) == {"benchmark"}


def test_the_checker_sees_a_module_circle(tmp_path):
    """A circle inside one package through a lazy relative import is found; a chain is not."""
    pkg = tmp_path / "core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from core.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .c import y\n")
    (pkg / "c.py").write_text("y = 1\n")
    graph = _module_graph(tmp_path, {"core"})
    assert graph["core.a"] == {"core.b"} and graph["core.b"] == {"core.c"}
    assert _circles(graph) == []
    (pkg / "c.py").write_text("def g():\n    from core import a\n")
    assert _circles(_module_graph(tmp_path, {"core"})) == [["core.a", "core.b", "core.c"]]
