"""The README's docs index and the manual's layout follow the tree; nothing in the README or
docs/ points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_indexes_every_doc():
    index = (ROOT / "README.md").read_text(encoding="utf-8").split("## Documentation", 1)[1]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in index, doc.name


def test_layout_names_every_package():
    manual = (ROOT / "docs" / "manual.md").read_text(encoding="utf-8")
    layout = manual.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for init in sorted(ROOT.glob("*/__init__.py")):
        assert f"{init.parent.name}/" in layout, init.parent.name
    from backbones.registry import BACKBONES
    from estimators.registry import METHODS

    words = set(re.findall(r"[a-z_]+", layout))
    assert set(BACKBONES) <= words and set(METHODS) <= words


def test_no_pointer_outside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\.\./shared|shared/(DESIGN|ARCHITECTURE|FAMILY|PLATFORM)", text), (
            path
        )


def test_nothing_points_at_design_notes_or_issue_numbers():
    """Every tracked text file: no path to the developers' design notes outside the repository
    and no issue numbers (the reader of the repository has neither)."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yaml", "*.toml", "Makefile", "*.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pattern = re.compile(
        r"\.\./shared|\b(DESIGN|ARCHITECTURE|FAMILY|PLATFORM)\.md|\b[Ii]ssues? #?\d+\b"
    )
    hits = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and "github.com" not in line:
                hits.append(f"{name}:{i}: {line.strip()}")
    assert not [h for h in hits if not h.startswith("tests/test_docs.py")], hits
