"""Resume of a Gaussian-splatting run after SIGKILL: the Gaussian count changes (densification
every 4 steps) before and after the checkpoints, and the resumed run's metrics equal an
uninterrupted run's bit for bit (CPU). Helpers from tests/test_resume.py."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.test_resume import _cli, _comparable, _env, _only_run, _wait_for_checkpoint

ARGS = [
    "--backbone", "gaussians", "--methods", "sds,ssd", "--steps", "20", "--quiet", "--no-report",
    "--set", "checkpoint_every=4", "--set", "eval.every=8", "--set", "eval.n_views=2",
    "--set", "measure.every=8", "--set", "measure.samples=4", "--set", "measure.bootstrap=20",
    "--set", "render.height=16", "--set", "render.width=16", "--set", "threads=1",
    "--set", "gaussians.n_points=150", "--set", "gaussians.max_points=600",
    "--set", "gaussians.densify_from=4", "--set", "gaussians.densify_every=4",
    "--set", "gaussians.densify_grad_threshold=0.0", "--set", "gaussians.min_opacity=0.02",
    "--set", "gaussians.opacity_reset_every=12",
    "--set", "eval.clip=none",  # CLIP is not under test; its import costs ~5 s a process
]  # fmt: skip


@pytest.mark.slow
def test_gaussian_run_killed_then_resumed_is_bit_identical(tmp_path):
    (tmp_path / "prompts.txt").write_text("a snowman\n")
    full = _cli("run", "--prompts", "prompts.txt", "--out", "full", *ARGS, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", "--prompts", "prompts.txt", "--out", str(out)]
        + ARGS,
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_checkpoint(process, out)
    time.sleep(random.Random(7).uniform(0.5, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    run_dir = _only_run(out)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    resumed = _cli("resume", str(run_dir), "--quiet", "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    expected = _comparable(_only_run(tmp_path / "full"))
    got = _comparable(run_dir)
    assert expected["metric"].str.startswith("var/").any()
    pd.testing.assert_frame_equal(got, expected)
