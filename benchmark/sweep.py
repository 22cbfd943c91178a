"""Sweeps: methods x prompts x seeds x grid points, one task per cell, local or on Ray.

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
continues from it (benchmark.resume); otherwise its partial output is removed first.

Test hook: ``STEINBENCH_SWEEP_INJECT_FAILURES="PATTERN[:N[:exit|:exitK]],..."`` makes every
cell whose id matches the fnmatch PATTERN fail on its first N attempts (default 1): it raises
after leaving partial output in its cell dir, or with ``exit`` its worker process dies
before the run, with ``exitK`` when the cell reaches step K. It is read by the driver and
passed to the task, so it works the same on every executor.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmark.results import atomic_write_bytes
from benchmark.typed_config import from_dict, set_dotted, to_dict
from benchmark.yaml_io import read_yaml_mapping
from core.errors import ConfigError, UserError

INJECT_ENV = "STEINBENCH_SWEEP_INJECT_FAILURES"
SWEEP_AXES = ("methods", "seeds", "prompts_file", "out")  # set per cell, not grid keys
RAY_MISSING = "the ray executor needs Ray; install the ray extra: pip install -e .[ray]"


def is_machine_metric(name: str) -> bool:
    """Metrics measured on the machine, which differ between identical runs: wall-clock
    (``train_seconds``, ``var/seconds``, ``var/<v>/seconds``, ``time/<section>``) and memory
    (``mem/...``). Every other metric is reproducible bit for bit."""
    return name.startswith(("time/", "mem/")) or name.rsplit("/", 1)[-1].endswith("seconds")


@dataclass
class Resources:
    """What one cell task asks of the executor (Ray: ``ray.remote(num_cpus, num_gpus)``)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class SweepSpec:
    """The sweep file. ``base_config`` is a RunConfig YAML path (relative to the spec file)
    or mapping; ``grid`` maps dotted RunConfig keys to lists of values (cartesian product);
    ``steps`` (if set) overrides the base config's; ``prompts`` or ``prompts_file`` (relative
    to the spec file), not both."""

    name: str = "sweep"
    methods: list[str] = field(default_factory=list)
    prompts: list[str] | None = None
    prompts_file: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    base_config: Any = None
    grid: Any = None
    steps: int | None = None
    retries: int = 1
    resources: Resources = field(default_factory=Resources)


@dataclass
class Cell:
    """One task: ``config`` is the cell's fully resolved RunConfig as a plain dict."""

    cell_id: str
    method: str
    prompt: str
    seed: int
    overrides: dict[str, Any]
    config: dict


@dataclass
class Sweep:
    spec: SweepSpec
    resolved: dict  # what sweep.yaml holds
    grid: dict[str, list]
    cells: list[Cell]


# ----------------------------------------------------------------------------- the spec


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _overrides_hash(point: dict[str, Any]) -> str:
    text = json.dumps(point, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def cell_id(method: str, prompt: str, seed: int, point: dict[str, Any]) -> str:
    """Stable, readable id: ``sds_a-red-sphere_s0`` plus ``_<8 hex>`` of the grid point."""
    from evaluation.heldout import slug

    base = f"{method}_{slug(prompt)}_s{seed}"
    return f"{base}_{_overrides_hash(point)}" if point else base


def _check_spec(spec: SweepSpec) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.name):
        raise ConfigError(f"bad name {spec.name!r}: use letters, digits, '.', '_', '-'")
    if not spec.methods:
        raise ConfigError("'methods' must list at least one method")
    if not spec.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"'seeds' has duplicates: {spec.seeds}")
    if (spec.prompts is None) == (spec.prompts_file is None):
        raise ConfigError("give exactly one of 'prompts' (a list) or 'prompts_file'")
    if spec.prompts is not None and not spec.prompts:
        raise ConfigError("'prompts' must list at least one prompt")
    if spec.steps is not None and spec.steps < 1:
        raise ConfigError(f"'steps' must be >= 1, got {spec.steps}")
    if spec.retries < 0:
        raise ConfigError(f"'retries' must be >= 0, got {spec.retries}")
    if spec.resources.num_cpus <= 0 or spec.resources.num_gpus < 0:
        raise ConfigError("'resources' needs num_cpus > 0 and num_gpus >= 0")


def _check_grid(grid: Any) -> dict[str, list]:
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise ConfigError(f"'grid' must map dotted config keys to lists, got {grid!r}")
    out: dict[str, list] = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not key or not all(key.split(".")):
            raise ConfigError(f"bad grid key {key!r}: expected a dotted config key like 'a.b'")
        if key.split(".")[0] in SWEEP_AXES:
            raise ConfigError(
                f"grid key '{key}' is set by the sweep itself; use the spec's "
                "'methods', 'seeds' or 'prompts' instead"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key '{key}' needs a non-empty list of values, got {values!r}")
        for i, value in enumerate(values):
            if any(_same(value, other) for other in values[:i]):
                raise ConfigError(f"grid key '{key}' lists the value {value!r} twice")
        out[key] = values
    return out


def load_sweep(spec_path: str | Path, retries: int | None = None) -> Sweep:
    """Read, validate and expand a sweep spec; every cell's RunConfig is built here, so a bad
    value is a ConfigError (one line) before anything runs or is written."""
    path = Path(spec_path)
    data = read_yaml_mapping(path, "sweep spec")
    try:
        spec = from_dict(SweepSpec, data)
        _check_spec(spec)
        if retries is not None:
            if retries < 0:
                raise ConfigError(f"--retries must be >= 0, got {retries}")
            spec.retries = retries
        grid = _check_grid(spec.grid)
    except ConfigError as exc:
        raise ConfigError(f"sweep spec {path}: {exc}") from None
    return expand(spec, path.parent, grid, source=str(path))


def _resolve_prompts(spec: SweepSpec, root: Path) -> list[str]:
    from benchmark.prompts import read_prompts, validate_prompts
    from world.objects import known_prompts

    if spec.prompts_file is not None:
        prompts = read_prompts(root / spec.prompts_file)
    else:
        prompts = list(dict.fromkeys(spec.prompts))
    validate_prompts(prompts, known_prompts())
    return prompts


def expand(spec: SweepSpec, root: Path, grid: dict[str, list], source: str = "spec") -> Sweep:
    """Cells = methods x prompts x seeds x grid points, each with its validated RunConfig."""
    from benchmark.config import RunConfig
    from benchmark.methods import validate_methods

    methods = validate_methods(spec.methods)
    prompts = _resolve_prompts(spec, root)
    if isinstance(spec.base_config, str):
        base = read_yaml_mapping(root / spec.base_config, "base config")
    elif spec.base_config is None or isinstance(spec.base_config, dict):
        base = copy.deepcopy(spec.base_config or {})
    else:
        raise ConfigError(
            f"sweep spec {source}: 'base_config' must be a path or a mapping, "
            f"got {spec.base_config!r}"
        )
    if "threads" not in base and "threads" not in grid:
        base["threads"] = max(1, int(spec.resources.num_cpus))
    if spec.steps is not None:
        base["steps"] = spec.steps

    def build(tree: dict, where: str) -> dict:
        try:
            return to_dict(from_dict(RunConfig, tree))
        except ConfigError as exc:
            raise ConfigError(f"sweep spec {source}: {where}: {exc}") from None

    build(base, "base_config")
    for key, values in grid.items():
        for value in values:
            tree = copy.deepcopy(base)
            try:
                set_dotted(tree, key, copy.deepcopy(value))
            except ConfigError as exc:
                raise ConfigError(f"sweep spec {source}: grid key '{key}': {exc}") from None
            build(tree, f"grid '{key}' = {value!r}")

    cells: list[Cell] = []
    seen: dict[str, str] = {}
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    for method, prompt, seed, point in itertools.product(methods, prompts, spec.seeds, points):
        cid = cell_id(method, prompt, seed, point)
        if cid in seen:
            raise ConfigError(
                f"sweep spec {source}: prompts '{seen[cid]}' and '{prompt}' give "
                f"the same cell id '{cid}'"
            )
        seen[cid] = prompt
        tree = copy.deepcopy(base)
        for key, value in point.items():
            set_dotted(tree, key, copy.deepcopy(value))
        tree.update(methods=[method], seeds=[seed])
        if spec.prompts_file is not None:
            tree["prompts_file"] = str(root / spec.prompts_file)
        config = build(tree, f"cell {cid}")
        config.pop("out")
        cells.append(Cell(cid, method, prompt, seed, point, config))
    resolved = {
        "name": spec.name,
        "methods": methods,
        "prompts": prompts,
        "seeds": list(spec.seeds),
        "base_config": base,
        "grid": grid,
        "steps": spec.steps,
        "retries": spec.retries,
        "resources": to_dict(spec.resources),
        "cells": len(cells),
    }
    return Sweep(spec, resolved, grid, cells)


# ----------------------------------------------------------------------------- one task


class InjectedFailure(RuntimeError):
    """Raised by the test hook (``STEINBENCH_SWEEP_INJECT_FAILURES``)."""


class CellStopped(RuntimeError):
    """The cell's worker got SIGINT/SIGTERM and stopped after writing a checkpoint: a failed
    attempt (retried from that checkpoint), not a stop of the whole sweep."""


def injected_failures(text: str | None) -> list[tuple[str, int, str]]:
    """Parse ``PATTERN[:N[:exit|:exitK]],...``: (pattern, attempts that fail (default 1),
    kind: raise, exit (before the run) or exitK (at step K))."""
    rules = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        pattern, count, kind, *rest = [*item.strip().split(":"), "", ""]
        valid_kind = kind in ("", "exit") or re.fullmatch(r"exit\d+", kind)
        if rest[:-2] or not valid_kind or not (count or "1").isdigit():
            raise UserError(f"bad {INJECT_ENV} entry {item!r}: expected PATTERN[:N[:exit[K]]]")
        rules.append((pattern, int(count or 1), kind or "raise"))
    return rules


def _reopen_cell(cell_dir: Path, expected: dict):
    """``benchmark.resume.open_run`` of a partial cell dir that holds a readable checkpoint
    of the same config, else None (the caller then starts the cell afresh)."""
    from benchmark.checkpoint import load_checkpoint
    from benchmark.resume import RunAlreadyFinished, open_run

    checkpoints = sorted((cell_dir / "checkpoints").glob("*.pt"))
    if not checkpoints:
        return None
    try:
        for path in checkpoints:
            load_checkpoint(path)
        config, methods, prompts, state = open_run(cell_dir)
    except (UserError, RunAlreadyFinished):
        return None
    resolved = to_dict(config)
    resolved.pop("out")
    if not _same(resolved, expected):
        return None
    return config, methods, prompts, state, load_checkpoint(checkpoints[0]).step


def _die_at_step(step: int):
    """Test hook: make this worker process die when a cell reaches ``step``; returns undo."""
    from benchmark.trainer import CellTrainer

    original = CellTrainer.step

    def dying(self, k, *args, **kwargs):
        if k == step:
            os._exit(3)
        return original(self, k, *args, **kwargs)

    CellTrainer.step = dying
    return lambda: setattr(CellTrainer, "step", original)


def run_cell_task(task: dict) -> dict:
    """Run one cell into ``task['cells_root']/<cell_id>``. Partial output of an earlier
    attempt continues from its checkpoint (benchmark.resume) when it has a readable one of
    the same config, else it is removed and the cell starts afresh. Returns a summary dict;
    exceptions propagate to the executor."""
    import shutil

    from benchmark.config import RunConfig
    from benchmark.runner import run_benchmark

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
    undo = _die_at_step(int(inject[4:])) if inject.startswith("exit") else (lambda: None)
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
        )
    except KeyboardInterrupt:  # benchmark.runner.RunInterrupted: checkpoint kept
        raise CellStopped("the cell's worker was stopped by SIGINT/SIGTERM") from None
    finally:
        undo()
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


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # Ray's RayTaskError wraps the task's exception
    exc = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


# ----------------------------------------------------------------------------- executors


class LocalExecutor:
    """A spawn-context process pool; a dead worker breaks the pool, which is then rebuilt
    (each in-flight cell of the broken pool is charged one attempt)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = None

    def start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, task: dict):
        return self.pool.submit(run_cell_task, task)

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
            # every in-flight future belongs to the broken pool and is done after shutdown
            self.pool.shutdown(wait=True)
            done = [f for f in handles if f.done()]
            self.start()
        out = []
        for future in done:
            try:
                out.append((future, future.result(), None))
            except BrokenProcessPool as exc:
                out.append((future, None, f"worker process died: {_error_line(exc)}"))
            except Exception as exc:  # noqa: BLE001 - a failed cell, recorded and retried
                out.append((future, None, _error_line(exc)))
        return out

    def shutdown(self, cancel: bool = False, handles: list = ()) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self.pool = None


class RayExecutor:
    """Ray tasks with the spec's resources; Ray's own retries are off (the sweep counts
    attempts). Uses a running Ray (``ray.is_initialized()``) as is, otherwise starts a local
    one or joins ``address``, and then shuts it down at the end. Workers import this package
    (a local Ray starts them in the driver's folder; cluster nodes need it installed) and
    write to the sweep dir, so on a multi-node cluster it must be on a shared filesystem."""

    name = "ray"

    def __init__(self, resources: Resources, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(RAY_MISSING) from None
        if address is not None:
            probe_address(address)
        self.ray = ray
        self.resources = resources
        self.address = address
        self.owned = False
        self.remote = None

    def start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f" at {self.address}" if self.address else ""
                raise UserError(f"cannot start or reach Ray{where}: {_error_line(exc)}") from None
            self.owned = True
        self.remote = ray.remote(
            num_cpus=self.resources.num_cpus,
            num_gpus=self.resources.num_gpus,
            max_retries=0,
        )(run_cell_task)

    def submit(self, task: dict):
        return self.remote.remote(task)

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref), None))
            except Exception as exc:  # noqa: BLE001 - task error or dead worker: retried
                out.append((ref, None, _error_line(exc)))
        return out

    def shutdown(self, cancel: bool = False, handles: list = ()) -> None:
        for ref in handles if cancel else ():
            self.ray.cancel(ref, force=True)
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a ``HOST:PORT`` / ``ray://HOST:PORT`` Ray address does not
    answer: ``ray.init`` itself retries for minutes. ``auto`` and ``local`` pass as is."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"bad --address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def make_executor(kind: str, workers: int | None, resources: Resources, address: str | None):
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if kind == "local":
        if address is not None:
            raise UserError("--address is only used with --executor ray")
        return LocalExecutor(workers or 1)
    if kind == "ray":
        return RayExecutor(resources, address)
    raise UserError(f"unknown executor '{kind}'; use local or ray")


# ----------------------------------------------------------------------------- the driver


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
    return manifest.get("status") == "finished"


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
        differ = [k for k in keys if not _same(previous.get(k), sweep.resolved[k])]
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


def combine_metrics(sweep: Sweep, out: Path, finished: list[str]) -> Path:
    """``out/metrics.parquet``: the finished cells' rows + ``cell_id`` + one column per grid
    key (mixed-type or structured grid values are stored as JSON text)."""
    import pandas as pd

    from benchmark.results import METRIC_COLUMNS

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
    _write_json(manifest_path, manifest)
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
    status = "interrupted"
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
            for handle, result, error in executor.wait(list(inflight)):
                cell, began = inflight.pop(handle)
                entry = manifest["cells"][cell.cell_id]
                entry["seconds"] = entry.get("seconds", 0.0) + time.perf_counter() - began
                if error is None:
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
    finally:
        executor.shutdown(cancel=status != "finished", handles=list(inflight))
        for entry in manifest["cells"].values():
            if entry["status"] == "running":
                entry["status"] = "pending"
        finished = [c.cell_id for c in sweep.cells if cell_finished(cells_root, c.cell_id)]
        if status == "finished":
            combine_metrics(sweep, out, finished)
        manifest.update(
            status=status,
            finished=_now(),
            seconds=time.perf_counter() - started,
            counts={
                s: sum(e["status"] == s for e in manifest["cells"].values())
                for s in ("finished", "failed", "pending")
            },
        )
        _write_json(manifest_path, manifest)
    counts = manifest["counts"]
    diverged = sum(e.get("result") == "diverged" for e in manifest["cells"].values())
    say(
        f"sweep {sweep.spec.name}: {counts['finished']} finished ({diverged} diverged), "
        f"{counts['failed']} failed, in {manifest['seconds']:.1f} s; results: {out}"
    )
    return out, manifest


def main_sweep(args, argv: list[str]) -> int:
    """``python -m benchmark sweep``: validate everything, then run; exit 1 if a cell failed."""
    sweep = load_sweep(args.spec, retries=args.retries)
    resources = sweep.spec.resources
    executor = make_executor(args.executor, args.workers, resources, args.address)
    out = Path(args.out) if args.out else Path("sweeps") / sweep.spec.name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is not a folder")
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
        print(f"warning: could not write the sweep report ({_error_line(exc)})", file=sys.stderr)
        return
    print(f"report: {path}", file=sys.stderr)
