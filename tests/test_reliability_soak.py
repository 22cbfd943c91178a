"""Kills, resumes and two writers at once, with real OS processes: the soak (scripts/soak.py)
at a small size, the run dir's lock raced by two processes, and the two defects the soak found
(a killed sweep driver's workers kept running; a retried cell deleted a cell dir another
process still held). Results are compared exactly with an undisturbed run's (machine metrics
left out, see scripts/soak.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.scripts import load_script
from tests.test_reliability_round3 import snapshot_tree

ROOT = Path(__file__).resolve().parents[1]
soak = load_script("soak")

SETS = soak.set_items(soak.TINY)


def _env(tmp: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                STEINBENCH_CACHE=str(tmp / "cache"))  # fmt: skip


def _python(tmp: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=_env(tmp), text=True, **kw)


def _one_error_line(stderr: str, needle: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    return lines[0]


# --------------------------------------------------------------- the soak script itself


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--seed", "x"], "invalid int value"),
        (["--workers", "0"], "--workers must be 1-8"),
        (["--only", "both"], "invalid choice"),
        (["--work", "{foreign}"], "was not made by this script"),
        (["--work", "{foreign}/file.txt"], "is not a folder"),
    ],
)
def test_soak_bad_arguments_are_one_line_and_touch_nothing(tmp_path, argv, needle):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "file.txt").write_text("not the soak's\n")
    before = snapshot_tree(tmp_path)
    argv = [a.replace("{foreign}", str(foreign)) for a in argv]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), *argv],
        capture_output=True, text=True, env=_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    _one_error_line(done.stderr, needle)
    assert snapshot_tree(tmp_path) == before


@pytest.mark.slow
def test_small_soak_is_identical(tmp_path):
    """4 cells, the sweep driver killed once (SIGKILL); a run stopped twice (SIGKILL and
    SIGINT or SIGTERM) and resumed; everything identical to the undisturbed sweep and run."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--small", "--seed", "3",
         "--work", str(tmp_path / "soak")],
        capture_output=True, text=True, env=_env(tmp_path), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "IDENTICAL"
    assert "sweep: IDENTICAL" in lines and "run: IDENTICAL" in lines
    kills = [line for line in lines if line.startswith(("| sweep | 1 | KILL", "| run | "))]
    assert any("| sweep | 1 | KILL |" in line for line in kills)
    signals = {line.split(" | ")[2] for line in kills if line.startswith("| run | ")}
    assert signals >= {"KILL"} and signals & {"INT", "TERM"}, kills


# ------------------------------------------------- a killed sweep driver's pool workers


@pytest.mark.slow
def test_a_killed_sweep_drivers_workers_stop_after_their_step(tmp_path):
    """kill -9 of the sweep driver: its pool worker used to run its cell to the end (into a
    dir a rerun of the sweep would use) and then wait forever; now it stops after its step
    with a checkpoint, letting go of the cell dir's lock."""
    import psutil

    from benchmark.run.runlock import RunLock

    spec = {"name": "orphan", "methods": ["sds"], "prompts": ["a red sphere"], "seeds": [0],
            "steps": 5000, "base_config": soak.TINY}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(json.dumps(spec))
    out = tmp_path / "out"
    driver = _python(tmp_path, "-m", "benchmark", "sweep", str(tmp_path / "sweep.yaml"),
                     "--out", str(out), "--quiet", stderr=subprocess.PIPE)  # fmt: skip
    cell = out / "cells" / "sds_a-red-sphere_s0"
    worker = None
    try:
        deadline = time.monotonic() + 300
        while worker is None and time.monotonic() < deadline and driver.poll() is None:
            if list((cell / "checkpoints").glob("*.pt")):
                worker = soak.read_json(cell / "manifest.json").get("pid")
            time.sleep(0.05)
        assert worker is not None, "the cell never started training"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        try:
            psutil.Process(worker).wait(timeout=60)
        except psutil.TimeoutExpired:
            pytest.fail("the killed driver's worker is still running 60 s later")
        except psutil.NoSuchProcess:
            pass
        manifest = soak.read_json(cell / "manifest.json")
        assert manifest["status"] != "finished"  # stopped early, not run to the end
        assert list((cell / "checkpoints").glob("*.pt"))
        with RunLock(cell) as lock:  # let go of
            assert lock.held
    finally:
        if driver.poll() is None:
            driver.kill()
        if worker is not None and psutil.pid_exists(worker):
            os.kill(worker, signal.SIGKILL)


# -------------------------------------- a retried cell never touches a dir another process holds

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from benchmark.run.runlock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    if float(sys.argv[2]) > 0:
        time.sleep(float(sys.argv[2]))
    else:
        sys.stdin.readline()
    """
)


def _hold(tmp: Path, cell: Path, seconds: float = 0.0) -> subprocess.Popen:
    holder = _python(tmp, "-c", _HOLDER, str(cell), str(seconds), stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def _task(root: Path, **extra) -> dict:
    task = {"cell_id": "sds_a-red-sphere_s0", "cells_root": str(root), "config": {}}
    return {**task, "method": "sds", "prompt": "a red sphere", "seed": 0, "attempt": 2, **extra}


def _partial_cell(root: Path) -> Path:
    cell = root / "sds_a-red-sphere_s0"
    (cell / "checkpoints").mkdir(parents=True)
    (cell / "metrics.parquet").write_bytes(b"rows of a process still running\n")
    (cell / "manifest.json").write_text('{"status": "running"}\n')
    return cell


def test_a_retried_cell_leaves_a_dir_another_process_holds_untouched(tmp_path, monkeypatch):
    """Before: the task treated the held lock as "no usable checkpoint" and deleted the dir
    under the process writing it (two writers in one cell dir). Now: it waits, then fails
    the attempt with one line, every byte left as it was."""
    from benchmark.sweep import task as task_module
    from core.errors import UserError

    root = tmp_path / "cells"
    cell = _partial_cell(root)
    holder = _hold(tmp_path, cell)
    try:
        before = snapshot_tree(root)
        monkeypatch.setattr(task_module, "LOCK_WAIT_S", 0.5, raising=False)
        with pytest.raises(UserError, match=rf"in use by another process \(pid {holder.pid}\)"):
            task_module.run_cell_task(_task(root))
        assert snapshot_tree(root) == before
    finally:
        holder.communicate("\n")


def test_a_retried_cell_waits_for_the_holder_to_let_go(tmp_path, monkeypatch):
    from benchmark.sweep import task as task_module
    from benchmark.sweep.faults import InjectedFailure

    root = tmp_path / "cells"
    cell = _partial_cell(root)
    holder = _hold(tmp_path, cell, seconds=1.5)
    began = time.monotonic()
    monkeypatch.setattr(task_module, "LOCK_WAIT_S", 60.0, raising=False)
    with pytest.raises(InjectedFailure):  # reached only once the dir was taken over
        task_module.run_cell_task(_task(root, inject_failure="raise"))
    assert holder.wait(timeout=30) == 0
    assert time.monotonic() - began >= 1.0
    assert sorted(p.name for p in cell.iterdir()) == ["partial.txt"]  # the old output cleared


# A process that takes the run dir's flock and writes its pid into .lock only after a delay
# (the moment a race's winner has the lock but has not yet named itself).
_LATE_NAMER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    if float(sys.argv[2]) >= 0:
        time.sleep(float(sys.argv[2]))
        with open(os.path.join(sys.argv[1], ".lock"), "w") as f:
            f.write(f"{os.getpid()}\\n")
    sys.stdin.readline()
    """
)


@pytest.mark.parametrize("names_itself_after", [-1.0, 0.3])
def test_a_refused_process_never_names_the_last_dead_holder(tmp_path, names_itself_after):
    """Found by the two-process race below: the loser read .lock before the winner had
    written its pid there and named the last holder, a dead process. Now it waits up to a
    second for .lock to name a live process, else says "unknown"."""
    from benchmark.run.runlock import RunLock, pid_alive
    from core.errors import UserError

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid) and pid_alive(os.getpid())
    (tmp_path / ".lock").write_text(f"{gone.pid}\n")  # the last holder's, now dead
    holder = _python(tmp_path, "-c", _LATE_NAMER, str(tmp_path), str(names_itself_after),
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as refused:
            RunLock(tmp_path).acquire()
        named = str(holder.pid) if names_itself_after >= 0 else "unknown"
        assert f"in use by another process (pid {named})" in str(refused.value)
    finally:
        holder.communicate("\n")


# ------------------------------------------------- two processes racing for one run dir

_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from benchmark.run.config import load_config
    from benchmark.run.runner import run_benchmark

    out, steps, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = load_config(None, sys.argv[4:] + ["workers=1"], methods=["sds", "ssd"],
                         steps=steps, seeds=[0], out=out)
    calls = []

    def before_step(step):
        calls.append(step)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    run_benchmark(config, ["sds", "ssd"], ["a red sphere"], argv=[], quiet=True,
                  report=False, before_step=before_step)
    """
)
# Imports everything a resume needs, says "ready", waits for "go" on stdin, then runs the
# command in its arguments: two of these take the lock within a millisecond of each other.
_RACER = textwrap.dedent(
    """
    import sys
    import benchmark.run.resume, benchmark.run.runner, torch  # the slow imports first
    from benchmark.cli.commands import main
    print("ready", flush=True)
    sys.stdin.readline()
    sys.exit(main(sys.argv[1:] + ["--quiet", "--no-report"]))
    """
)
# The same, but the command's run stops before its first training step with the run dir's
# lock held, says "training" and waits for a second "go": a writer that holds its run dir for
# as long as a test needs (a pause changes none of the run's results).
_HOLDING_RACER = textwrap.dedent(
    """
    import sys
    import benchmark.run.resume, benchmark.run.runner as runner, torch
    from benchmark.cli.commands import main
    inner, held = runner.run_benchmark, []

    def before_step(step):
        if not held:
            held.append(step)
            print("training", flush=True)
            sys.stdin.readline()

    runner.run_benchmark = lambda *a, **k: inner(*a, **k, before_step=before_step)
    print("ready", flush=True)
    sys.stdin.readline()
    sys.exit(main(sys.argv[1:] + ["--quiet", "--no-report"]))
    """
)
STEPS = 150


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run of 2 cells (150 steps each) killed with SIGKILL at step 40 of its first cell."""
    tmp = tmp_path_factory.mktemp("killed")
    child = _python(tmp, "-c", _KILLED_RUN, str(tmp / "runs"), str(STEPS), "40", *SETS)
    assert child.wait(timeout=600) == -signal.SIGKILL
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    assert soak.read_json(run / "manifest.json")["status"] == "running"
    return run


def _racer(tmp: Path, *argv: str, script: str = _RACER) -> subprocess.Popen:
    racer = _python(tmp, "-c", script, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)  # fmt: skip
    assert racer.stdout.readline().strip() == "ready", racer.communicate()
    return racer


def _go(*racers: subprocess.Popen) -> None:
    for racer in racers:
        racer.stdin.write("go\n")
        racer.stdin.flush()


def _resume_alone(tmp: Path, run: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "resume", str(run), "--quiet", "--no-report"],
        env=_env(tmp), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def resumed_once(killed_run, tmp_path_factory) -> Path:
    """The killed run, resumed by one process: what every race must leave."""
    run = shutil.copytree(killed_run, tmp_path_factory.mktemp("alone") / killed_run.name)
    _resume_alone(run.parent, run)
    return run


@pytest.mark.slow
def test_two_resumes_started_together_exactly_one_proceeds(killed_run, resumed_once, tmp_path):
    """Five times: two processes, released at once, resume the same killed run. One exits 0,
    the other exits 2 with one line naming the winner's pid; the run's results are then
    exactly those of one resume (and config.yaml the same bytes)."""
    for trial in range(5):
        run = shutil.copytree(killed_run, tmp_path / f"t{trial}" / killed_run.name)
        racers = [_racer(tmp_path, "resume", str(run)) for _ in range(2)]
        _go(*racers)
        results = [(r.pid, *r.communicate(timeout=600)[1:], r.returncode) for r in racers]
        codes = sorted(code for *_, code in results)
        assert codes == [0, 2], (trial, results)
        (winner,) = [pid for pid, _, code in results if code == 0]
        (loser_err,) = [err for _, err, code in results if code == 2]
        _one_error_line(loser_err, f"is in use by another process (pid {winner})")
        assert soak.compare_run_dirs(resumed_once, run, drop=()) == [], trial
        assert (run / "config.yaml").read_bytes() == (resumed_once / "config.yaml").read_bytes()
        assert len(soak.read_json(run / "manifest.json")["resumed"]) == 1


@pytest.mark.slow
def test_a_second_writer_during_a_resume_is_refused_whatever_happens_to_dot_lock(
    killed_run, resumed_once, tmp_path
):
    """A resume in progress; RUN/.lock deleted (what let a second writer in, 1 try in 3),
    then replaced by another pid, then by a symlink; after each, a second writer from
    another process (`resume RUN`, `run --resume RUN`, `resume RUN`) is refused (exit 2, one
    line), and the first resume ends exactly as a single resume does."""
    run = shutil.copytree(killed_run, tmp_path / killed_run.name)
    first = _racer(tmp_path, "resume", str(run), script=_HOLDING_RACER)
    argvs = (["resume", str(run)], ["run", "--resume", str(run)], ["resume", str(run)])
    seconds = [_racer(tmp_path, *argv) for argv in argvs]
    _go(first)  # it takes the lock, then holds before its first step until the second "go"
    assert first.stdout.readline().strip() == "training", first.communicate()
    assert soak.read_json(run / "manifest.json").get("pid") == first.pid
    lock = run / ".lock"
    for how, second in zip(("deleted", "replaced", "symlink"), seconds, strict=True):
        lock.unlink(missing_ok=True)
        if how == "replaced":
            lock.write_text("999999\n")
        elif how == "symlink":
            lock.symlink_to(tmp_path / "elsewhere")
        _go(second)
        _, err = second.communicate(timeout=600)
        assert second.returncode == 2, (how, err)
        _one_error_line(err, "is in use by another process")
        assert first.poll() is None, f"the first resume ended before the second writer ({how})"
    _, err = first.communicate("go\n", timeout=600)
    assert first.returncode == 0, err
    assert soak.compare_run_dirs(resumed_once, run, drop=()) == []
    assert len(soak.read_json(run / "manifest.json")["resumed"]) == 1


# ------------------------------- a run killed while it writes summary.csv is not finished yet

_SUMMARY_KILL = textwrap.dedent(
    """
    import os, signal, sys
    import benchmark.run.runner as runner
    from benchmark.run.config import load_config

    out, run_id, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
    config = load_config(None, sys.argv[4:] + ["workers=1"], methods=["sds"], steps=20,
                         seeds=[0], out=out)
    if kill:  # SIGKILL at the moment summary.csv is written (a few seconds on a busy machine)
        runner.write_run_summary = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    runner.run_benchmark(config, ["sds"], ["a red sphere"], argv=[], quiet=True,
                         report=False, run_id=run_id)
    """
)


def _summary_child(tmp: Path, out: Path, run_id: str, kill: bool) -> Path:
    child = _python(tmp, "-c", _SUMMARY_KILL, str(out), run_id, "kill" if kill else "no", *SETS)
    assert child.wait(timeout=600) == (-signal.SIGKILL if kill else 0)
    return out / run_id


@pytest.mark.slow
def test_a_run_killed_while_writing_its_summary_is_resumed_to_one(tmp_path):
    """Before: the manifest said finished before summary.csv was written, so a kill then left
    a finished run without summary.csv for good ("already finished; nothing to resume"), and
    a sweep skipped such a cell. Now the run is finished only once summary.csv is written."""
    killed = _summary_child(tmp_path, tmp_path / "killed", "r", kill=True)
    assert not (killed / "summary.csv").exists()
    assert soak.read_json(killed / "manifest.json")["status"] != "finished"
    _resume_alone(tmp_path, killed)
    whole = _summary_child(tmp_path, tmp_path / "whole", "r", kill=False)
    assert soak.read_json(killed / "manifest.json")["status"] == "finished"
    assert soak.compare_run_dirs(whole, killed) == []  # summary.csv included


@pytest.mark.slow
def test_a_sweep_cell_killed_while_writing_its_summary_is_not_trained_again(tmp_path):
    import pandas as pd

    from benchmark.run.config import load_config
    from benchmark.run.typed_config import to_dict
    from benchmark.sweep.task import run_cell_task

    root = tmp_path / "cells"
    cell = _summary_child(tmp_path, root, "sds_a-red-sphere_s0", kill=True)
    rows = pd.read_parquet(cell / "metrics.parquet")
    config = to_dict(load_config(None, [*SETS, "workers=1"], methods=["sds"], steps=20,
                                 seeds=[0], out=str(root)))  # fmt: skip
    config.pop("out")
    result = run_cell_task(_task(root, config=config, attempt=1))
    assert result["steps_done"] == 20 and result["result"] == "ok"
    assert soak.read_json(cell / "manifest.json")["status"] == "finished"
    assert (cell / "summary.csv").is_file()
    # not trained again: every row the same, wall-clock seconds included
    pd.testing.assert_frame_equal(pd.read_parquet(cell / "metrics.parquet"), rows)
