"""scripts/verdict_table.py: the README's verdict table, generated with its date and command."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime
from pathlib import Path

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_script("verdict_table")


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


def test_a_prompt_subset_keeps_only_its_cells(tmp_path, monkeypatch):
    """``--prompts FILE``: the table of the cells whose prompt the file lists (the family's
    before/after on the 12 single objects of a 15-prompt run); none listed is an error."""
    import pandas as pd
    import pytest

    from tests.test_verdict import MANIFESTS, _results

    script = _script()
    base = _results(ssd_var=8.0)
    other = base.assign(prompt="another prompt")
    other.loc[other["method"] == "ssd", "value"] *= 3.0
    frames = {"both": pd.concat([base, other], ignore_index=True), "base": base}
    use = ["both"]
    monkeypatch.setattr("analysis.load.load_results", lambda dirs: frames[use[0]])
    monkeypatch.setattr("analysis.verdict.load_manifests", lambda dirs: MANIFESTS)

    def rows(block):
        return [line for line in block.splitlines() if line.startswith("| ")]

    subset = rows(script.verdict_block([tmp_path], [], prompts=["a snowman"]))
    everything = rows(script.verdict_block([tmp_path], []))
    use[0] = "base"
    alone = rows(script.verdict_block([tmp_path], []))
    assert subset == alone and subset != everything
    with pytest.raises(ValueError, match="no cell"):
        script.verdict_block([tmp_path], [], prompts=["a prompt no cell has"])
