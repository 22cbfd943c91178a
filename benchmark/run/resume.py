"""Reopen an interrupted run directory for ``python -m benchmark resume RUN_DIR``.

Checks, each failing with a one-line UserError and touching nothing: the directory exists;
no other process holds its lock (benchmark.run.runlock, taken first and handed to the run, which
holds it to the end); config.yaml parses into a valid RunConfig; manifest.json is valid JSON,
an object naming methods, prompts and seeds; metrics.parquet (if present) is readable.
Checkpoints are validated when their cell resumes (benchmark.run.checkpoint.load_checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.run.runlock import RunLock
from core.errors import UserError


class RunAlreadyFinished(Exception):
    """The run dir holds a finished run: nothing to resume (not an error)."""


def _read_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is corrupt ({exc}); it was left untouched") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict):
        kind = "null" if manifest is None else type(manifest).__name__
        raise UserError(
            f"{path} is corrupt (it holds {kind}, not a JSON object); it was left untouched"
        )
    missing = [k for k in ("methods", "prompts", "seeds") if k not in manifest]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; cannot resume")
    bad = [
        k
        for k in ("methods", "prompts", "seeds", "cells")
        if not isinstance(manifest.get(k, []), list)
    ]
    if bad:
        raise UserError(f"{path} is corrupt ({bad[0]} is not a list); it was left untouched")
    return manifest


def _manifest_prompts(path: Path, manifest: dict, prior: str) -> list[str]:
    """The manifest's prompts: a non-empty list of distinct strings, each known to the world
    when the run's prior is the world (what ``run`` checked); else a UserError."""
    prompts = manifest["prompts"]
    where = f"{path}/manifest.json"
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise UserError(f"{where} is corrupt (prompts must be non-empty strings); cannot resume")
    if len(set(prompts)) != len(prompts):
        raise UserError(f"{where} is corrupt (a prompt is listed twice); cannot resume")
    if prior == "world":
        from benchmark.run.prompts import validate_prompts
        from world.distributions import all_prompts

        try:
            validate_prompts(prompts, all_prompts())
        except UserError as exc:
            raise UserError(f"{where}: {exc}; cannot resume") from None
    return list(prompts)


def open_run(run_dir: str | Path, lock: RunLock | None = None):
    """(config, methods, prompts, ResumeState) of an interrupted run at ``run_dir``; the
    state holds the run dir's lock (released by ``run_benchmark`` at the end). ``lock``: the
    run dir's lock, already held by the caller (it is handed over, and released on error)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if not (path / "manifest.json").is_file():
        raise UserError(f"{run_dir} is not a run directory (no manifest.json)")
    if lock is None:
        lock = RunLock(path).acquire()  # before reading: two resumes cannot both pass
    try:
        return _open_locked(path, run_dir, lock)
    except BaseException:
        lock.release()
        raise


def _open_locked(path: Path, run_dir: str | Path, lock: RunLock):
    from benchmark.run.config import load_config
    from benchmark.run.factories import validate_methods
    from benchmark.run.runner import ResumeState
    from benchmark.run.store import RunStore
    from benchmark.run.trainer import CellResult
    from core.errors import ConfigError

    manifest = _read_manifest(path)
    if manifest.get("status") == "finished":
        raise RunAlreadyFinished(str(path))
    try:
        config = load_config(str(path / "config.yaml"))
    except ConfigError as exc:
        raise UserError(f"cannot resume {run_dir}: {exc}") from None
    methods = validate_methods(list(manifest["methods"]))
    prompts = _manifest_prompts(path, manifest, config.prior)
    if list(manifest["seeds"]) != list(config.seeds):
        raise UserError(f"{path}: manifest seeds {manifest['seeds']} != config {config.seeds}")
    try:
        completed = [CellResult(**cell) for cell in manifest.get("cells", [])]
    except TypeError as exc:
        raise UserError(f"{path}/manifest.json has malformed cells ({exc})") from None
    store = RunStore.reopen(path)
    if completed and not store.rows:
        raise UserError(
            f"{path}/metrics.parquet is missing but the manifest lists finished cells; "
            "the run dir is incomplete"
        )
    return config, methods, prompts, ResumeState(store, manifest, completed, lock)
