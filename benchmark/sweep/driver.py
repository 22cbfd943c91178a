"""The sweep driver: methods x prompts x seeds x grid points, one task per cell, local or on Ray.

``python -m benchmark sweep SPEC.yaml`` reads a strict spec (:class:`SweepSpec`), expands it
into cells, builds and validates every cell's RunConfig before anything runs, then runs each
cell as one task (``run_benchmark`` with one method, prompt and seed) into
``SWEEP_DIR/cells/<cell_id>/``. A task that raises or whose worker dies is retried up to
``retries`` times; a NaN divergence is a result (recorded by the run), not a failure. Cells
whose run manifest says ``finished`` are skipped, so rerunning a killed sweep continues it.

The sweep dir holds ``sweep.yaml`` (the resolved spec), ``sweep_manifest.json`` (cells,
status, attempts, errors, timings; rewritten after every cell) and ``metrics.parquet`` (every
finished cell's rows plus ``cell_id`` and one column per grid key), all written atomically.

A retried cell whose earlier attempt left a readable checkpoint (``checkpoint_every``)
continues from it (benchmark.run.resume); otherwise its partial output is removed first.

Test hook: ``STEINBENCH_SWEEP_INJECT_FAILURES="PATTERN[:N[:exit|:exitK]],..."`` makes every
cell whose id matches the fnmatch PATTERN fail on its first N attempts (default 1): it raises
after leaving partial output in its cell dir, or with ``exit`` its worker process dies
before the run, with ``exitK`` when the cell reaches step K. It is read by the driver and
passed to the task, so it works the same on every executor.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmark.run.inputs import check_out_dir
from benchmark.run.runlock import RunLock
from benchmark.run.typed_config import to_dict
from benchmark.sweep.executors import make_executor
from benchmark.sweep.faults import INJECT_ENV, injected_failures
from benchmark.sweep.spec import MAX_CELLS, Cell, Sweep, load_sweep, same_json
from benchmark.sweep.task import error_line
from core.errors import UserError
from results.atomic import atomic_write_bytes
from results.schema import METRIC_COLUMNS


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(path, text.encode("utf-8"))


def cell_finished(cells_root: Path, cid: str) -> bool:
    """True when ``cells/<cid>/manifest.json`` says the run finished (diverged or not)."""
    try:
        manifest = json.loads((cells_root / cid / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("status") == "finished"


def _prepare_dir(sweep: Sweep, out: Path) -> dict:
    """Create the sweep dir or check that it holds the same sweep; returns the previous
    manifest's cells (empty for a new dir)."""
    spec_file = out / "sweep.yaml"
    if spec_file.exists():
        try:
            previous = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            previous = {}
        keys = [k for k in sweep.resolved if k != "retries"]
        differ = [k for k in keys if not same_json(previous.get(k), sweep.resolved[k])]
        if differ:
            raise UserError(
                f"{out} holds a different sweep ({', '.join(differ)} differ); "
                "use another --out to start a new sweep"
            )
        try:
            old = json.loads((out / "sweep_manifest.json").read_text(encoding="utf-8"))
            return old.get("cells", {})
        except (OSError, ValueError):
            return {}
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a sweep dir (no sweep.yaml); use another --out")
    text = yaml.safe_dump(sweep.resolved, sort_keys=False, allow_unicode=True)
    atomic_write_bytes(spec_file, text.encode("utf-8"))
    return {}


def _write_failed(out: Path, exc: OSError, what: str) -> UserError:
    """The one line for a sweep dir that cannot be written (read-only, full disk)."""
    where = f" ({exc.filename})" if exc.filename else ""
    return UserError(
        f"cannot write the sweep dir {out}: {exc.strerror or exc}{where}; {what}; once "
        "writable, run the same command again (finished cells are kept and skipped)"
    )


def combine_metrics(sweep: Sweep, out: Path, finished: list[str]) -> Path:
    """``out/metrics.parquet``: the finished cells' rows + ``cell_id`` + one column per grid
    key (mixed-type or structured grid values are stored as JSON text)."""
    import pandas as pd

    by_id = {c.cell_id: c for c in sweep.cells}
    frames = []
    for cid in finished:
        frame = pd.read_parquet(out / "cells" / cid / "metrics.parquet")
        frame["cell_id"] = cid
        frames.append(frame)
    columns = [*METRIC_COLUMNS, "cell_id"]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for key, values in sweep.grid.items():
        kinds = {type(v) for v in values}
        plain = kinds <= {int, float} or (len(kinds) == 1 and kinds <= {bool, str})
        cast = (lambda v: v) if plain else (lambda v: json.dumps(v, sort_keys=True))
        if kinds == {int, float}:
            cast = float
        mapping = {cid: cast(by_id[cid].overrides[key]) for cid in finished}
        frame[key] = frame["cell_id"].map(mapping)
    target = out / "metrics.parquet"
    atomic_write_bytes(target, frame.to_parquet(index=False))
    return target


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    executor: Any,
    workers: int | None = None,
    argv: list[str] | None = None,
    quiet: bool = False,
) -> tuple[Path, dict]:
    """Run every unfinished cell of ``sweep`` into ``out`` with ``executor`` (already made;
    started here). Returns the sweep dir and the sweep manifest."""
    out = Path(out)
    executor.start()  # before anything is written: a Ray that cannot start writes nothing
    try:
        previous = _prepare_dir(sweep, out)
        lock = RunLock(out).acquire()  # one driver per sweep dir
    except OSError as exc:
        executor.shutdown(cancel=True)
        raise _write_failed(out, exc, "before any cell ran") from None
    except BaseException:
        executor.shutdown(cancel=True)
        raise
    cells_root = out / "cells"
    rules = injected_failures(os.environ.get(INJECT_ENV))
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    manifest = {
        "name": sweep.spec.name,
        "command": argv if argv is not None else sys.argv,
        "executor": executor.name,
        "address": getattr(executor, "address", None),
        "workers": workers,  # None: the executor's default (local 1, Ray: as resources allow)
        "retries": sweep.spec.retries,
        "resources": to_dict(sweep.spec.resources),
        "started": _now(),
        "status": "running",
        "cells": {},
    }
    todo = deque()
    for cell in sweep.cells:
        entry = {
            "method": cell.method,
            "prompt": cell.prompt,
            "seed": cell.seed,
            "overrides": cell.overrides,
            "status": "pending",
            "attempts": 0,
            "errors": [],
            "skipped": False,
        }
        if cell_finished(cells_root, cell.cell_id):
            old = previous.get(cell.cell_id, {})
            entry.update({k: v for k, v in old.items() if k not in ("status", "skipped")})
            entry.update(status="finished", skipped=True)
        else:
            todo.append(cell)
        manifest["cells"][cell.cell_id] = entry
    manifest_path = out / "sweep_manifest.json"
    try:
        _write_json(manifest_path, manifest)
    except OSError as exc:
        lock.release()
        executor.shutdown(cancel=True)
        raise _write_failed(out, exc, "before any cell ran") from None
    skipped = len(sweep.cells) - len(todo)
    say(
        f"sweep {sweep.spec.name}: {len(sweep.cells)} cells, {skipped} already finished, "
        f"{len(todo)} to run on the {executor.name} executor; results: {out}"
    )

    def task_of(cell: Cell, attempt: int) -> dict:
        fail = next(
            (k for p, n, k in rules if fnmatch.fnmatchcase(cell.cell_id, p) and attempt <= n),
            None,
        )
        return {
            "cell_id": cell.cell_id,
            "method": cell.method,
            "prompt": cell.prompt,
            "seed": cell.seed,
            "config": cell.config,
            "cells_root": str(cells_root.resolve()),
            "attempt": attempt,
            "inject_failure": fail,
            "argv": manifest["command"],
        }

    limit = workers or (len(todo) if executor.name == "ray" else 1)
    inflight: dict[Any, tuple[Cell, float]] = {}
    done_count = 0
    status, write_error = "interrupted", None
    try:
        while todo or inflight:
            while todo and len(inflight) < max(limit, 1):
                cell = todo.popleft()
                entry = manifest["cells"][cell.cell_id]
                entry["attempts"] += 1
                entry["status"] = "running"
                entry.setdefault("started", _now())
                inflight[executor.submit(task_of(cell, entry["attempts"]))] = (
                    cell,
                    time.perf_counter(),
                )
            for handle, result, error, charged in executor.wait(list(inflight)):
                cell, began = inflight.pop(handle)
                entry = manifest["cells"][cell.cell_id]
                entry["seconds"] = entry.get("seconds", 0.0) + time.perf_counter() - began
                if error is not None and not charged:  # another cell's worker died
                    entry["attempts"] -= 1
                    entry["requeued"] = entry.get("requeued", 0) + 1
                    entry["status"] = "pending"
                    todo.appendleft(cell)
                    say(f"{cell.cell_id} re-queued, not charged ({error})")
                elif error is None:
                    done_count += 1
                    entry.update(status="finished", finished=_now(), **result)
                    note = "" if result["result"] == "ok" else " (diverged: recorded)"
                    say(
                        f"[{done_count}/{len(sweep.cells) - skipped}] {cell.cell_id} finished "
                        f"in {result['seconds']:.1f} s, attempt {entry['attempts']}{note}"
                    )
                elif entry["attempts"] <= sweep.spec.retries:
                    entry["errors"].append(error)
                    entry["status"] = "pending"
                    todo.append(cell)
                    say(f"{cell.cell_id} attempt {entry['attempts']} failed ({error}); retrying")
                else:
                    done_count += 1
                    entry["errors"].append(error)
                    entry.update(status="failed", finished=_now())
                    say(
                        f"[{done_count}/{len(sweep.cells) - skipped}] {cell.cell_id} FAILED after "
                        f"{entry['attempts']} attempts: {error}"
                    )
                _write_json(manifest_path, manifest)
        status = "finished"
    except OSError as exc:  # the sweep dir turned read-only or full: stop, say so below
        status, write_error = "failed", exc
    finally:
        executor.shutdown(cancel=status != "finished", handles=list(inflight))
        for entry in manifest["cells"].values():
            if entry["status"] == "running":
                entry["status"] = "pending"
        finished = [c.cell_id for c in sweep.cells if cell_finished(cells_root, c.cell_id)]
        manifest.update(
            status=status,
            finished=_now(),
            seconds=time.perf_counter() - started,
            counts={
                s: sum(e["status"] == s for e in manifest["cells"].values())
                for s in ("finished", "failed", "pending")
            },
        )
        try:
            if status == "finished":
                combine_metrics(sweep, out, finished)
            _write_json(manifest_path, manifest)
        except OSError as exc:  # an exception on its way out (Ctrl-C) keeps going
            write_error = write_error or exc
        finally:
            lock.release()
    if write_error is not None:
        raise _write_failed(out, write_error, "the sweep stopped")
    counts = manifest["counts"]
    diverged = sum(e.get("result") == "diverged" for e in manifest["cells"].values())
    say(
        f"sweep {sweep.spec.name}: {counts['finished']} finished ({diverged} diverged), "
        f"{counts['failed']} failed, in {manifest['seconds']:.1f} s; results: {out}"
    )
    return out, manifest


def main_sweep(args, argv: list[str]) -> int:
    """``python -m benchmark sweep``: validate everything, then run; exit 1 if a cell failed."""
    say = (lambda text: None) if args.quiet else (lambda t: print(t, file=sys.stderr, flush=True))
    max_cells = MAX_CELLS if args.max_cells is None else args.max_cells
    sweep = load_sweep(args.spec, retries=args.retries, max_cells=max_cells, progress=say)
    resources = sweep.spec.resources
    executor = make_executor(args.executor, args.workers, resources, args.address)
    out = Path(args.out) if args.out else Path("sweeps") / sweep.spec.name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is not a folder")
    check_out_dir(out.parent if not out.exists() else out)
    _, manifest = run_sweep(sweep, out, executor, args.workers, argv=argv, quiet=args.quiet)
    if args.report:
        _write_report(sweep, out, manifest)
    return 1 if manifest["counts"]["failed"] else 0


def _write_report(sweep: Sweep, out: Path, manifest: dict) -> None:
    """``out/report.html`` over the finished cells; a failure is a warning only."""
    from analysis.report import write_report

    dirs = [
        out / "cells" / cid for cid, e in manifest["cells"].items() if e["status"] == "finished"
    ]
    if not dirs:
        return
    try:
        path = write_report(dirs, out / "report.html", title=f"steinbench sweep {sweep.spec.name}")
    except Exception as exc:  # noqa: BLE001 - the results are already on disk
        print(f"warning: could not write the sweep report ({error_line(exc)})", file=sys.stderr)
        return
    print(f"report: {path}", file=sys.stderr)
