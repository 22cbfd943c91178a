"""scripts/verdict_table.py: the README's verdict table, generated with its date and command."""

from __future__ import annotations

import doctest
import importlib.util
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "verdict_table", ROOT / "scripts" / "verdict_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_run():
    failures, tried = doctest.testmod(_script())
    assert tried > 0 and failures == 0


def test_the_readme_holds_one_block_to_replace():
    script = _script()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(script.BEGIN) == 1 and text.count(script.END) == 1
    assert text.index(script.BEGIN) < text.index(script.END) < text.index("## Set-up")


def test_block_of_a_run_names_date_commands_and_every_method(tmp_path, monkeypatch):
    from tests.test_verdict import MANIFESTS, _results

    script = _script()
    monkeypatch.setattr("analysis.load.load_results", lambda dirs: _results(ssd_var=8.0))
    monkeypatch.setattr(
        "analysis.verdict.load_manifests",
        lambda dirs: {"r": {**MANIFESTS["r"], "command": ["python", "-m", "benchmark", "run"]}},
    )
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    block = script.verdict_block([tmp_path], [str(tmp_path)], now)
    assert block.startswith("Generated 2026-12-07 12:00 UTC by `python scripts/verdict_table.py")
    assert "`python -m benchmark run`" in block
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| method", "| sds", "| ssd"]
    assert "0.25 [0.25, 0.25]: worse" in block  # the multiplier of tests/test_verdict.py
