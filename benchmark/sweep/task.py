"""One sweep cell as a task: a one-cell run into ``SWEEP_DIR/cells/<cell_id>/``.

A retried cell whose earlier attempt left a readable checkpoint (``checkpoint_every``)
continues from it (benchmark.run.resume), as does one killed after training, while it wrote
summary.csv; otherwise its partial output is removed first. Either happens only with the
cell dir's lock held: an earlier attempt's process that still writes there (a worker of a
killed sweep driver, stopping after its step) is waited for up to ``LOCK_WAIT_S`` seconds,
and if it still holds the lock then, the attempt fails with one line and the dir is left as
it is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmark.run.runlock import RunLock
from benchmark.run.typed_config import from_dict, to_dict
from benchmark.sweep.faults import INJECT_ENV, InjectedFailure, die_at_step
from benchmark.sweep.spec import same_json
from core.errors import UserError

LOCK_WAIT_S = 120.0  # how long a cell waits for an earlier attempt's process to let go of it


class CellStopped(RuntimeError):
    """The cell's worker got SIGINT/SIGTERM and stopped after writing a checkpoint: a failed
    attempt (retried from that checkpoint), not a stop of the whole sweep."""


def _reopen_cell(cell_dir: Path, expected: dict, lock: RunLock):
    """``benchmark.run.resume.open_run`` of a partial cell dir that holds a readable checkpoint
    of the same config, else None (the caller then starts the cell afresh). ``lock``: the
    cell dir's lock, held by the caller; handed to the returned state."""
    from benchmark.run.checkpoint import load_checkpoint
    from benchmark.run.resume import RunAlreadyFinished, open_run

    checkpoints = sorted((cell_dir / "checkpoints").glob("*.pt"))
    if not checkpoints and not _cell_listed(cell_dir):
        return None
    try:
        for path in checkpoints:
            load_checkpoint(path, steps=expected.get("steps"))
        config, methods, prompts, state = open_run(cell_dir, lock=lock)
    except (UserError, RunAlreadyFinished):
        return None
    resolved = to_dict(config)
    resolved.pop("out")
    if not same_json(resolved, expected):
        state.lock.release()
        return None
    return (
        config,
        methods,
        prompts,
        state,
        (load_checkpoint(checkpoints[0]).step if checkpoints else None),
    )


def _cell_listed(cell_dir: Path) -> bool:
    """True when the cell's manifest lists its cell among the finished ones: the run was
    killed after training, while it wrote summary.csv (its resume writes only that)."""
    import json

    try:
        manifest = json.loads((cell_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and bool(manifest.get("cells"))


def run_cell_task(task: dict) -> dict:
    """Run one cell into ``task['cells_root']/<cell_id>``. Partial output of an earlier
    attempt continues from its checkpoint (benchmark.run.resume) when it has a readable one of
    the same config, else it is removed and the cell starts afresh. Returns a summary dict;
    exceptions propagate to the executor."""
    import shutil

    from benchmark.run.config import RunConfig
    from benchmark.run.runner import run_benchmark

    cells_root = Path(task["cells_root"])
    cell_dir = cells_root / task["cell_id"]
    reopened = None
    if cell_dir.exists():  # an earlier attempt's output: only touched with its lock held
        lock = RunLock(cell_dir).acquire(wait=LOCK_WAIT_S)
        try:
            reopened = _reopen_cell(cell_dir, task["config"], lock)
            if reopened is None:
                shutil.rmtree(cell_dir)
        finally:
            if reopened is None:
                lock.release()
    inject = task.get("inject_failure") or ""
    if inject in ("raise", "exit"):
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "partial.txt").write_text("output of an attempt that crashed\n")
        if inject == "exit":
            os._exit(3)  # a dying worker (segfault, OOM kill)
        raise InjectedFailure(f"injected failure ({INJECT_ENV}), attempt {task['attempt']}")
    before_step = die_at_step(int(inject[4:])) if inject.startswith("exit") else None
    started = time.perf_counter()
    try:
        if reopened is None:
            config = from_dict(RunConfig, dict(task["config"], out=str(cells_root)))
            methods, prompts, state, resumed_from = [task["method"]], [task["prompt"]], None, None
        else:
            config, methods, prompts, state, resumed_from = reopened
        _, results = run_benchmark(
            config,
            methods,
            prompts,
            argv=task.get("argv"),
            quiet=True,
            report=False,
            resume=state,
            run_id=task["cell_id"],
            before_step=before_step,
        )
    except KeyboardInterrupt:  # benchmark.run.runner.RunInterrupted: checkpoint kept
        raise CellStopped("the cell's worker was stopped by SIGINT/SIGTERM") from None
    result = results[0]
    return {
        "resumed_from_step": resumed_from,
        "result": "ok" if result.status == "ok" else "diverged",
        "failed_step": result.failed_step,
        "reason": result.reason,
        "steps_done": result.steps_done,
        "train_seconds": result.train_seconds,
        "seconds": time.perf_counter() - started,
        "final": result.final,
        "pid": os.getpid(),
    }


def error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # Ray's RayTaskError wraps the task's exception
    exc = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]
