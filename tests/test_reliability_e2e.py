"""Reliability, the slow end-to-end cases: a write error mid-run followed by two concurrent
resumes (the run lock), and a sweep whose worker dies mid-cell (the retry charge). The fast
cases are in tests/test_reliability.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.cli.commands import EXIT_CELLS_FAILED, main
from core.errors import UserError
from results.schema import is_machine_metric
from tests.test_reliability import ROOT, TINY, one_error_line

# ------------------------------------------- 1, 4, 11, 12: write error, concurrent resume


def _comparable(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "metrics.parquet").drop(columns=["run_id"])
    frame = frame[~frame["metric"].map(is_machine_metric)]
    keys = ["method", "prompt", "seed", "step", "metric"]
    assert not frame.duplicated(keys).any()
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.slow
def test_write_error_then_concurrent_resumes(tmp_path, monkeypatch, capsys):
    """A write error mid-run: one line, the manifest marked failed; a resume of it runs in a
    subprocess while a second one is refused (the lock); the first cleans a planted temp file
    and ends with the undisturbed run's metrics, its files created under the umask."""
    import torch

    import benchmark.run.store as store_module
    from benchmark.run.config import load_config
    from benchmark.run.runner import run_benchmark
    from results.atomic import stale_temp_files

    torch.set_num_threads(1)
    steps, methods, prompts = 30, ["sds", "ssd"], ["a red sphere"]
    config = load_config(None, TINY, steps=steps, out=str(tmp_path / "full"))
    full, _ = run_benchmark(config, methods, prompts, quiet=True, report=False)

    real_write = store_module.atomic_write_bytes

    def fail_metrics_at_step_5(step):
        if step == 5:

            def write(path, data):
                if Path(path).name == "metrics.parquet":
                    raise OSError(30, "Read-only file system", str(path))
                return real_write(path, data)

            monkeypatch.setattr(store_module, "atomic_write_bytes", write)

    config = load_config(None, TINY, steps=steps, out=str(tmp_path / "broken"))
    with pytest.raises(UserError) as info:
        run_benchmark(config, methods, prompts, quiet=True, report=False,
                      before_step=fail_metrics_at_step_5)  # fmt: skip
    monkeypatch.setattr(store_module, "atomic_write_bytes", real_write)
    message = str(info.value)
    assert "Read-only file system" in message and "resume" in message and "\n" not in message
    (run_dir,) = (tmp_path / "broken").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "Read-only" in manifest["error"]
    planted = run_dir / "checkpoints" / ".sds_a-red-sphere_s0.pt.x1y2.tmp"
    planted.write_bytes(b"\0" * 2**20)

    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    first = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "resume", str(run_dir), "--quiet", "--no-report"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while (run_dir / ".lock").read_text().strip() != str(first.pid):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.01)
    second = main(["resume", str(run_dir), "--quiet", "--no-report"])
    line = one_error_line(capsys, second)
    assert f"is in use by another process (pid {first.pid})" in line
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumed"]) == 1
    assert stale_temp_files(run_dir) == [] and not planted.exists()
    pd.testing.assert_frame_equal(_comparable(run_dir), _comparable(full))
    mask = os.umask(0)
    os.umask(mask)
    for path in (p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# ---------------------------------------------------- also: a dead worker's retry charge


@pytest.mark.slow
def test_a_dead_worker_costs_a_retry_only_to_its_own_cell(tmp_path, monkeypatch, capsys):
    """Two workers, no retries: the worker of one cell dies mid-run (exit at step 2) while
    the other cell runs; the other cell is re-queued uncharged and finishes."""
    from benchmark.sweep import INJECT_ENV

    spec = {
        "name": "dead",
        "methods": ["sds"],
        "prompts": ["a red sphere", "a snowman"],
        "seeds": [0],
        "steps": 40,
        "retries": 0,
        "base_config": {
            "render": {"height": 16, "width": 16},
            "voxel": {"resolution": 16, "n_samples": 16},
            "world": {"n_azimuth": 4, "elevations": [0.0, 30.0], "supersample": 1},
            "measure": {"every": 0},
            "eval": {"every": 20, "snapshots": False, "n_views": 2},
            "checkpoint_every": 5,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv(INJECT_ENV, "sds_a-red-sphere_s0:1:exit2")
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out), "--workers", "2", "--quiet"])
    assert code == EXIT_CELLS_FAILED, capsys.readouterr().err
    cells = json.loads((out / "sweep_manifest.json").read_text())["cells"]
    dead, healthy = cells["sds_a-red-sphere_s0"], cells["sds_a-snowman_s0"]
    assert dead["status"] == "failed" and dead["attempts"] == 1, dead
    assert "worker process died" in dead["errors"][0]
    assert healthy["status"] == "finished" and healthy["attempts"] == 1, healthy
    assert healthy["errors"] == [] and healthy.get("requeued", 0) <= 1
    frame = pd.read_parquet(out / "metrics.parquet")
    assert set(frame["cell_id"]) == {"sds_a-snowman_s0"}
    assert math.isfinite(frame[frame["metric"] == "psnr"]["value"].iloc[-1])
    shutil.rmtree(out)
