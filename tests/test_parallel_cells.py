"""Cells on worker threads (benchmark/run/parallel_cells.py): the same numbers as one cell after
the other at the same threads per cell, bit for bit; one cell's error stops the others and
reaches the caller; the auto rule."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest

import benchmark.probe.moments
import benchmark.run.parallel_cells
from benchmark.cli.commands import main
from benchmark.run.parallel_cells import auto_workers, run_cells

SMALL = [
    "render.height=16",
    "render.width=16",
    "voxel.resolution=12",
    "voxel.n_samples=24",
    "eval.every=3",
    "measure.every=3",
    "measure.samples=4",
    "measure.reference_samples=4",
    "world.n_azimuth=8",
]


def _run(tmp_path, name: str, sets: list[str]) -> tuple[pd.DataFrame, dict]:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a snowman\na red sphere\n")
    out = tmp_path / name
    args = ["run", "--methods", "sds,vsd", "--prompts", str(prompts), "--steps", "6"]
    args += ["--out", str(out), "--quiet", "--no-report", "--clip", "none"]
    for item in [*SMALL, *sets]:
        args += ["--set", item]
    assert main(args) == 0
    run = next(out.iterdir())
    frame = pd.read_parquet(run / "metrics.parquet").drop(columns="run_id")
    machine = frame["metric"].str.contains("seconds|^time/|^mem/", regex=True)
    return frame[~machine].reset_index(drop=True), json.loads((run / "manifest.json").read_text())


@pytest.mark.slow
def test_two_workers_give_one_threads_numbers_bit_for_bit(tmp_path):
    """4 cells on 2 threads (1 torch thread each) vs one after the other on 1 thread: every
    non-machine row equal (values, order), the manifest's cells in the same order."""
    parallel, manifest = _run(tmp_path, "par", ["workers=2", "threads=2"])
    serial, manifest_1 = _run(tmp_path, "ser", ["workers=1", "threads=1"])
    assert manifest["workers"] == 2 and manifest["threads_per_cell"] == 1
    assert manifest_1["workers"] == 1 and manifest_1["threads_per_cell"] == 1
    pd.testing.assert_frame_equal(parallel, serial, check_exact=True)
    order = [(c["method"], c["prompt"]) for c in manifest["cells"]]
    assert order == [(c["method"], c["prompt"]) for c in manifest_1["cells"]]
    assert order[0] == ("sds", "a snowman") and len(order) == 4


def test_one_cells_error_stops_the_others_and_is_raised():
    """Cell 'bad' fails while 'slow' runs: 'slow' sees should_stop, 'late' never starts, the
    error reaches the caller, on_done got nothing of the failed cell."""
    started, done, stopped = [], [], threading.Event()
    first_running = threading.Event()

    def run_one(cell, should_stop):
        started.append(cell)
        if cell == "slow":
            first_running.set()
            while not should_stop():
                time.sleep(0.01)
            stopped.set()
            return "stopped"
        first_running.wait(5)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_cells(["slow", "bad", "late"], run_one, lambda c, r: done.append(c), 2, lambda: False)
    assert stopped.is_set() and "late" not in started and "bad" not in done


def test_stop_request_reaches_every_running_cell_and_no_new_cell_starts():
    """Ctrl-C (stop() true) once both workers run a cell: both see should_stop and return
    (the run then checkpoints them); the third cell never starts."""
    started, both = [], threading.Barrier(2)

    def run_one(cell, should_stop):
        started.append(cell)
        both.wait(5)
        while not should_stop():
            time.sleep(0.01)
        return cell

    done = []
    run_cells(["a", "b", "c"], run_one, lambda c, r: done.append(r), 2, lambda: len(started) >= 2)
    assert sorted(done) == ["a", "b"] and "c" not in started


def test_auto_workers_rule(monkeypatch):
    monkeypatch.setattr(benchmark.run.parallel_cells, "available_cpus", lambda: 2)
    assert auto_workers(2, "cpu", True) == 2
    assert auto_workers(1, "cpu", True) == 1
    assert auto_workers(8, "cpu", True) == 2  # no more than the CPUs
    assert auto_workers(2, "cuda", True) == 1 and auto_workers(2, "cpu", False) == 1


def test_workers_above_one_need_the_world_prior_on_cpu(tmp_path, capsys):
    """workers=2 with a real prior: one error line, exit 2, before the prior is loaded."""
    code = main(
        ["run", "--prior", f"sd:{tmp_path / 'sd'}", "--prompts", "prompts/objects.txt"]
        + ["--steps", "1", "--out", str(tmp_path / "o"), "--quiet", "--set", "workers=2"]
    )
    assert code == 2 and not list((tmp_path / "o").glob("*/manifest.json"))
    assert "error: workers=2 needs --prior world on CPU" in capsys.readouterr().err
