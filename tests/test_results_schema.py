"""results/: the schema both sides share: the catalogue covering every metric a run logs, the
atomic write (permissions from the umask, no temp file left). Its doctests run in
tests/test_doctests.py."""

from __future__ import annotations

import os

import pytest

from results.atomic import atomic_write_text, stale_temp_files
from results.catalogue import CATALOGUE, lookup


@pytest.mark.slow
def test_every_logged_metric_is_catalogued(tmp_path):
    """A tiny run of every registered method (probe with the bias check on) logs only
    metrics the catalogue knows."""
    import pandas as pd

    from benchmark.checks.tiny_runs import small_run
    from estimators.registry import METHODS

    run_dir = small_run(
        tmp_path,
        methods=tuple(METHODS),
        steps=2,
        seeds=(0,),
        every=2,
        overrides=("measure.reference_samples=4", "eval.snapshots=false"),
    )
    names = set(pd.read_parquet(run_dir / "metrics.parquet")["metric"])
    unknown = sorted(n for n in names if lookup(n) is None)
    assert not unknown, f"metrics missing from results/catalogue.py: {unknown}"


def test_catalogue_rows_are_unique_and_typed():
    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    for info in CATALOGUE:
        assert info.kind in ("quality", "variance", "cost", "diagnostic", "machine")
        assert info.better in ("higher", "lower", None)
    assert lookup("var/fixed_camera/var_trace/density").title.startswith("trace variance")
    assert lookup("no/such/metric") is None


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "f.txt", "x")
    finally:
        os.umask(old)
    assert path.read_text() == "x"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert stale_temp_files(tmp_path) == []
