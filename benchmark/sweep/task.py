"""One sweep cell as a task: a one-cell run into ``SWEEP_DIR/cells/<cell_id>/``.

A retried cell whose earlier attempt left a readable checkpoint (``checkpoint_every``)
continues from it (benchmark.run.resume); otherwise its partial output is removed first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmark.run.typed_config import from_dict, to_dict
from benchmark.sweep.faults import INJECT_ENV, InjectedFailure, die_at_step
from benchmark.sweep.spec import same_json
from core.errors import UserError


class CellStopped(RuntimeError):
    """The cell's worker got SIGINT/SIGTERM and stopped after writing a checkpoint: a failed
    attempt (retried from that checkpoint), not a stop of the whole sweep."""


def _reopen_cell(cell_dir: Path, expected: dict):
    """``benchmark.run.resume.open_run`` of a partial cell dir that holds a readable checkpoint
    of the same config, else None (the caller then starts the cell afresh)."""
    from benchmark.run.checkpoint import load_checkpoint
    from benchmark.run.resume import RunAlreadyFinished, open_run

    checkpoints = sorted((cell_dir / "checkpoints").glob("*.pt"))
    if not checkpoints:
        return None
    try:
        for path in checkpoints:
            load_checkpoint(path, steps=expected.get("steps"))
        config, methods, prompts, state = open_run(cell_dir)
    except (UserError, RunAlreadyFinished):
        return None
    resolved = to_dict(config)
    resolved.pop("out")
    if not same_json(resolved, expected):
        state.lock.release()
        return None
    return config, methods, prompts, state, load_checkpoint(checkpoints[0]).step


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
    reopened = _reopen_cell(cell_dir, task["config"]) if cell_dir.exists() else None
    if cell_dir.exists() and reopened is None:
        shutil.rmtree(cell_dir)
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
