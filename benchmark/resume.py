"""Reopen an interrupted run directory for ``python -m benchmark resume RUN_DIR``.

Checks, each failing with a one-line UserError and touching nothing: the directory exists;
config.yaml parses into a valid RunConfig; manifest.json is valid JSON naming methods,
prompts and seeds; metrics.parquet (if present) is readable; the run is not still alive.
Checkpoints are validated when their cell resumes (benchmark.checkpoint.load_checkpoint).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

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
    missing = [k for k in ("methods", "prompts", "seeds") if k not in manifest]
    if not isinstance(manifest, dict) or missing:
        raise UserError(f"{path} lacks {', '.join(missing) or 'a mapping'}; cannot resume")
    return manifest


def _check_not_running(manifest: dict, run_dir: Path) -> None:
    pid = manifest.get("pid")
    if manifest.get("status") != "running" or not isinstance(pid, int):
        return
    if manifest.get("host") != platform.node() or pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"benchmark" not in cmdline.read_bytes():
        return  # the pid was reused by another program
    raise UserError(f"{run_dir} is still being written by process {pid}; stop it first")


def open_run(run_dir: str | Path):
    """(config, methods, prompts, ResumeState) of an interrupted run at ``run_dir``."""
    from benchmark.config import load_config
    from benchmark.factories import validate_methods
    from benchmark.runner import ResumeState
    from benchmark.store import RunStore
    from benchmark.trainer import CellResult
    from core.errors import ConfigError

    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    manifest = _read_manifest(path)
    if manifest.get("status") == "finished":
        raise RunAlreadyFinished(str(path))
    _check_not_running(manifest, path)
    try:
        config = load_config(str(path / "config.yaml"))
    except ConfigError as exc:
        raise UserError(f"cannot resume {run_dir}: {exc}") from None
    methods = validate_methods(list(manifest["methods"]))
    prompts = list(manifest["prompts"])
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
    return config, methods, prompts, ResumeState(store, manifest, completed)
