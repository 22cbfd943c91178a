"""Resume after a kill: checkpoints, bit-identical continuation, corrupt-file detection."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from results.schema import is_machine_metric
from tests.test_cli_errors import run_cli

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = "a red sphere\na snowman\n"
# Small but not trivial: 2 methods (SSD carries mu and depth-estimator state), eval and the
# variance probe mid-run, checkpoints every 4 steps.
RUN_ARGS = [
    "--methods", "sds,ssd", "--steps", "24", "--quiet", "--no-report",
    "--set", "checkpoint_every=4", "--set", "eval.every=8", "--set", "eval.n_views=2",
    "--set", "measure.every=8", "--set", "measure.samples=4", "--set", "measure.bootstrap=20",
    "--set", "render.height=16", "--set", "render.width=16", "--set", "threads=1",
]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, timeout=600)


def _only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _comparable(run_dir: Path) -> pd.DataFrame:
    """The run's metric rows without run_id and wall-clock/memory metrics, sorted."""
    frame = pd.read_parquet(run_dir / "metrics.parquet").drop(columns=["run_id"])
    frame = frame[~frame["metric"].map(is_machine_metric)]
    keys = ["method", "prompt", "seed", "step", "metric"]
    assert not frame.duplicated(keys).any(), "duplicate rows after resume"
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume")
    (path / "prompts.txt").write_text(PROMPTS)
    return path


@pytest.fixture(scope="module")
def uninterrupted(workdir) -> Path:
    out = workdir / "full"
    done = _cli("run", "--prompts", "prompts.txt", "--out", str(out), *RUN_ARGS, cwd=workdir)
    assert done.returncode == 0, done.stderr
    return _only_run(out)


def _start_run(workdir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", "--prompts", "prompts.txt", "--out", str(out)]
        + RUN_ARGS,
        cwd=workdir,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(process: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(out.glob("*/checkpoints/*.pt")):
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(workdir, uninterrupted):
    out = workdir / "killed"
    process = _start_run(workdir, out)
    _wait_for_checkpoint(process, out)
    # A random moment after the first checkpoint (fixed seed): any step, possibly mid-write.
    time.sleep(random.Random(11).uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    run_dir = _only_run(out)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running", "the kill must land before the run finished"

    resumed = _cli("resume", str(run_dir), "--quiet", "--no-report", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumed"]) == 1
    assert len(manifest["cells"]) == 4 and not list(run_dir.glob("checkpoints/*.pt"))
    pd.testing.assert_frame_equal(_comparable(run_dir), _comparable(uninterrupted))


@pytest.mark.slow
def test_ctrl_c_writes_checkpoint_and_run_resume_continues(workdir, uninterrupted):
    out = workdir / "sigint"
    process = _start_run(workdir, out)
    _wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    run_dir = _only_run(out)
    assert f"resume {run_dir}" in stderr and "Traceback" not in stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert list(run_dir.glob("checkpoints/*.pt")), "Ctrl-C must leave a checkpoint"

    resumed = _cli("run", "--resume", str(run_dir), "--quiet", "--no-report", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_comparable(run_dir), _comparable(uninterrupted))

    again = _cli("resume", str(run_dir), cwd=workdir)
    assert again.returncode == 0 and "already finished" in again.stderr


def _interrupted_copy(uninterrupted: Path, target: Path) -> Path:
    """A copy of a finished run dir that claims to be interrupted."""
    import shutil

    shutil.copytree(uninterrupted, target)
    manifest_file = target / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(status="interrupted", cells=manifest["cells"][:2])
    manifest_file.write_text(json.dumps(manifest))
    return target


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate_metrics", "metrics.parquet is unreadable"),
        ("corrupt_manifest", "manifest.json is corrupt"),
        ("bad_config", "cannot resume"),
        ("corrupt_checkpoint", "is unreadable (truncated or corrupt"),
    ],
)
def test_corrupt_files_are_reported_not_overwritten(workdir, uninterrupted, damage, expected):
    run_dir = _interrupted_copy(uninterrupted, workdir / f"damaged_{damage}" / "run")
    if damage == "truncate_metrics":
        victim = run_dir / "metrics.parquet"
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "corrupt_manifest":
        victim = run_dir / "manifest.json"
        victim.write_text(victim.read_text()[:-20])
    elif damage == "bad_config":
        victim = run_dir / "config.yaml"
        victim.write_text(victim.read_text() + "\nno_such_key: 1\n")
    else:
        victim = run_dir / "checkpoints" / "ssd_a-red-sphere_s0.pt"
        victim.parent.mkdir(exist_ok=True)
        victim.write_bytes(b"PK\x03\x04 not a checkpoint")
    before = victim.read_bytes()
    done = _cli("resume", str(run_dir), cwd=workdir)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert victim.read_bytes() == before


def test_resume_input_errors(tmp_path):
    missing = _cli("resume", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "run directory not found" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli("resume", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.returncode == 2 and "not a run directory" in empty.stderr
    mixed = _cli("run", "--resume", str(tmp_path), "--steps", "3", cwd=tmp_path)
    assert mixed.returncode == 2 and "drop --steps" in mixed.stderr
    for done in (missing, empty, mixed):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_run_cell_resumes_from_an_in_process_checkpoint():
    """run_cell: stop at step 3 via a checkpoint, continue in a fresh trainer: same rows."""
    import torch

    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellHooks, CellInterrupted, CellTrainer, run_cell

    config = load_config(
        None,
        ["steps=6", "eval.every=2", "eval.n_views=1", "measure.every=3", "measure.samples=3",
         "measure.bootstrap=0", "render.height=12", "render.width=12", "ssd.mu=optimal"],
    )  # fmt: skip
    prior = build_prior(config, ["a snowman"], torch.device("cpu"))

    def evaluate(backbone, step):
        with torch.no_grad():
            return {"mean_density": float(backbone.state_dict()["density"].mean())}

    def run(resume=None, stop_at=None):
        rows, saved = [], []
        trainer = CellTrainer(config, "ssd", "a snowman", 0, prior, torch.device("cpu"))
        done = {"n": 0}

        def on_step(k):
            done["n"] = k

        hooks = CellHooks(
            on_step=on_step,
            checkpoint=saved.append,
            stop_requested=lambda: stop_at is not None and done["n"] >= stop_at,
        )
        try:
            run_cell(trainer, evaluate, lambda s, m: rows.append((s, dict(m))), None, hooks, resume)
        except CellInterrupted:
            pass
        return rows, saved

    def strip(rows):
        return [(s, {k: v for k, v in m.items() if not is_machine_metric(k)}) for s, m in rows]

    full, _ = run()
    first, saved = run(stop_at=3)
    assert [c.step for c in saved] == [3]
    rest, _ = run(resume=saved[0])
    assert strip(first + rest) == strip(full)
