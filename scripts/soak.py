"""Soak test (not part of ``make test``): kills at random moments, then a check
that every metric equals an undisturbed run's.

1. A sweep of 16 tiny cells (2 methods x 2 prompts x 2 seeds x 2 grid values) on the local
   executor with two workers, one worker killed (``kill -9``) twice at random moments; the
   combined metrics are compared with an undisturbed sweep of the same spec.
2. A run of 2 cells killed at a random moment of its training, then resumed five times,
   each resume but the last also killed at a random moment of its training (after it wrote
   its pid into the manifest); its metrics are compared with an undisturbed run's.

Wall-clock and memory metrics (``results.schema.is_machine_metric``) are left out of the
comparison. Usage::

    python scripts/soak.py [--seed 0] [--work /tmp/soak]

Prints one line per event and a summary (cells, kills, retries, wall time, identical).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.schema import is_machine_metric  # noqa: E402

TINY = {
    "render": {"height": 16, "width": 16},
    "voxel": {"resolution": 16, "n_samples": 16},
    "world": {"n_azimuth": 4, "elevations": [0.0, 30.0], "supersample": 1},
    "measure": {"every": 4, "samples": 2, "bootstrap": 0},
    "eval": {"every": 4, "snapshots": False, "n_views": 2},
    "checkpoint_every": 2,
}
RUN_SETS = [
    "render.height=16", "render.width=16", "voxel.resolution=16", "voxel.n_samples=16",
    "world.n_azimuth=4", "world.elevations=[0,30]", "world.supersample=1", "eval.every=5",
    "eval.n_views=2", "eval.snapshots=false", "measure.every=10", "measure.samples=2",
    "measure.bootstrap=0", "threads=1", "checkpoint_every=3",
]  # fmt: skip


def env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def cli(*args: str, **kw) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmark", *args]
    return subprocess.Popen(command, env=env(), stderr=subprocess.PIPE, text=True, **kw)


def comparable(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = frame.drop(columns=["run_id"])
    frame = frame[~frame["metric"].map(is_machine_metric)]
    assert not frame.duplicated(keys).any(), "duplicate rows"
    return frame.sort_values(keys).reset_index(drop=True)


def identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError as exc:
        print(f"  DIFFERENCE: {str(exc)[:400]}")
        return False
    return True


def workers_of(driver: int) -> list[psutil.Process]:
    """The driver's pool workers (spawned children, not the resource tracker)."""
    try:
        children = psutil.Process(driver).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in line and "resource_tracker" not in line:
            out.append(child)
    return out


def soak_sweep(work: Path, rng: random.Random, kills: int = 2) -> dict:
    spec = {
        "name": "soak",
        "methods": ["sds", "ssd"],
        "prompts": ["a red sphere", "a snowman"],
        "seeds": [0, 1],
        "steps": 12,
        "retries": kills + 1,
        "base_config": TINY,
        "grid": {"sds.guidance_scale": [1.0, 2.0]},
    }
    spec_path = work / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    started = time.perf_counter()
    reference = cli("sweep", str(spec_path), "--out", str(work / "sweep_ref"), "--workers", "2")
    _, err = reference.communicate()
    assert reference.returncode == 0, err
    ref_seconds = time.perf_counter() - started

    started = time.perf_counter()
    driver = cli("sweep", str(spec_path), "--out", str(work / "sweep_soak"), "--workers", "2")
    done_kills = 0
    while done_kills < kills and driver.poll() is None:
        time.sleep(rng.uniform(2.0, 0.25 * ref_seconds))
        running = [w for w in workers_of(driver.pid) if w.is_running()]
        cells = work / "sweep_soak" / "cells"
        if not running or not cells.is_dir() or not any(cells.glob("*/checkpoints/*.pt")):
            continue  # wait until the workers are inside cells
        victim = rng.choice(running)
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue
        done_kills += 1
        print(f"  sweep: killed worker {victim.pid} at {time.perf_counter() - started:.1f} s")
        time.sleep(3.0)  # let the pool restart before the next kill
    _, err = driver.communicate()
    wall = time.perf_counter() - started
    manifest = json.loads((work / "sweep_soak" / "sweep_manifest.json").read_text())
    cells = manifest["cells"]
    keys = ["cell_id", "method", "prompt", "seed", "step", "metric"]
    same = identical(
        comparable(pd.read_parquet(work / "sweep_soak" / "metrics.parquet"), keys),
        comparable(pd.read_parquet(work / "sweep_ref" / "metrics.parquet"), keys),
    )
    return {
        "cells": len(cells),
        "finished": sum(c["status"] == "finished" for c in cells.values()),
        "kills": done_kills,
        "exit_code": driver.returncode,
        "retries_charged": sum(c["attempts"] - 1 for c in cells.values()),
        "requeued_uncharged": sum(c.get("requeued", 0) for c in cells.values()),
        "reference_seconds": round(ref_seconds, 1),
        "wall_seconds": round(wall, 1),
        "identical": same,
    }


def writer_pid(run_root: Path) -> int | None:
    """The pid in the run's manifest: written once the process holds the run dir's lock and
    has built everything, i.e. when it starts training."""
    for manifest in run_root.glob("*/manifest.json"):
        try:
            return json.loads(manifest.read_text()).get("pid")
        except (OSError, ValueError):
            return None
    return None


def soak_resume(work: Path, rng: random.Random, resumes: int = 5) -> dict:
    prompts = work / "prompts.txt"
    prompts.write_text("a red sphere\n")
    args = ["--methods", "sds,ssd", "--prompts", str(prompts), "--steps", "80", "--quiet"]
    args += ["--no-report", *[a for s in RUN_SETS for a in ("--set", s)]]
    started = time.perf_counter()
    reference = cli("run", *args, "--out", str(work / "run_ref"))
    _, err = reference.communicate()
    assert reference.returncode == 0, err
    ref_seconds = time.perf_counter() - started

    root = work / "run_soak"
    started = time.perf_counter()
    process, kills, runs, in_training = cli("run", *args, "--out", str(root)), 0, 0, 0
    while True:
        runs += 1
        last = runs == resumes + 1
        if not last:  # kill at a random moment once this process trains
            while writer_pid(root) != process.pid and process.poll() is None:
                time.sleep(0.01)
            delay = rng.uniform(0.2, 1.5)  # the tiny run trains for ~10 s or more
            time.sleep(delay)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                status = json.loads(next(root.glob("*/manifest.json")).read_text())["status"]
                in_training += status == "running"
                print(f"  run: killed process {runs} after {delay:.1f} s of training ({status})")
        _, err = process.communicate()
        print(f"  run: process {runs} ended with {process.returncode}")
        if last or process.returncode == 0:
            break
        (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
        process = cli("resume", str(run_dir), "--quiet", "--no-report")
    wall = time.perf_counter() - started
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    (ref_dir,) = [p for p in (work / "run_ref").iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    keys = ["method", "prompt", "seed", "step", "metric"]
    same = identical(
        comparable(pd.read_parquet(run_dir / "metrics.parquet"), keys),
        comparable(pd.read_parquet(ref_dir / "metrics.parquet"), keys),
    )
    return {
        "cells": len(manifest["cells"]),
        "status": manifest["status"],
        "exit_code": process.returncode,
        "kills": kills,
        "kills_before_the_run_finished": in_training,
        "processes": runs,
        "resumes_in_manifest": len(manifest.get("resumed", [])),
        "reference_seconds": round(ref_seconds, 1),
        "wall_seconds": round(wall, 1),
        "identical": same,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", default="/tmp/steinbench-soak", help="scratch folder")
    parser.add_argument("--only", choices=("sweep", "resume"), default=None)
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    summary = {}
    if args.only in (None, "sweep"):
        summary["sweep"] = soak_sweep(work, rng)
        print("sweep:", json.dumps(summary["sweep"]))
    if args.only in (None, "resume"):
        summary["resume"] = soak_resume(work, rng)
        print("resume:", json.dumps(summary["resume"]))
    return 0 if all(part["identical"] for part in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
