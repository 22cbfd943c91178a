"""Run metadata: manifest, resolved config, failed cells and snapshot files of run dirs.

A run dir is what ``benchmark.run.runner.run_benchmark`` writes: ``config.yaml``,
``manifest.json``, ``metrics.parquet`` and ``snapshots/`` with
``{method}_{slug}_s{seed}_step{step:05d}.png`` and ``truth_{slug}.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from results.schema import (
    SNAPSHOT_DIR,
    SNAPSHOT_PATTERN,
    cell_name,
    slug,
    snapshot_name,
    truth_snapshot_name,
)

__all__ = ["RunInfo", "slug"]


@dataclass
class RunInfo:
    """What one run dir says about itself (everything optional but the path)."""

    path: Path
    run_id: str
    manifest: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def failed_cells(self) -> list[dict]:
        return [c for c in self.manifest.get("cells", []) if c.get("status", "ok") != "ok"]

    @property
    def finished(self) -> bool:
        return self.manifest.get("status") == "finished"

    @property
    def prompts(self) -> list[str]:
        """The run's prompts (the manifest's), which make its file names unique (``slug``)."""
        prompts = self.manifest.get("prompts")
        return [p for p in prompts if isinstance(p, str)] if isinstance(prompts, list) else []

    def snapshot(self, method: str, prompt: str, seed: int, step: int) -> Path | None:
        name = snapshot_name(method, prompt, seed, step, self.prompts)
        path = self.path / SNAPSHOT_DIR / name
        return path if path.is_file() else None

    def truth(self, prompt: str) -> Path | None:
        path = self.path / SNAPSHOT_DIR / truth_snapshot_name(prompt, self.prompts)
        return path if path.is_file() else None

    def snapshot_steps(self, method: str, prompt: str, seed: int) -> list[int]:
        """Checkpoint steps with a snapshot of this cell, ascending."""
        folder = self.path / SNAPSHOT_DIR
        if not folder.is_dir():
            return []
        prefix = cell_name(method, prompt, seed, self.prompts) + "_step"
        steps = []
        for file in folder.glob(f"{prefix}*.png"):
            match = SNAPSHOT_PATTERN.match(file.name)
            if match and file.name.startswith(prefix):
                steps.append(int(match["step"]))
        return sorted(steps)


def check_run_dir(path: str | Path) -> Path:
    """The run dir as a Path; ``FileNotFoundError`` (one line) if it is not a run dir."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {path}")
    if not (path / "metrics.parquet").is_file():
        runs = sorted(p.name for p in path.iterdir() if (p / "metrics.parquet").is_file())
        hint = f"; it holds run dirs, e.g. {path / runs[-1]}" if runs else ""
        raise FileNotFoundError(f"not a run directory (no metrics.parquet): {path}{hint}")
    return path


def load_run_info(path: str | Path) -> RunInfo:
    """Manifest and config of one run dir (missing or unreadable files give empty dicts)."""
    import yaml

    path = check_run_dir(path)
    manifest, config = {}, {}
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        pass
    manifest = clean_manifest(manifest)
    config = config if isinstance(config, dict) else {}
    return RunInfo(path, str(manifest.get("run_id", path.name)), manifest, config)


#: manifest fields the readers use and the type each must have; a damaged one is dropped.
MANIFEST_TYPES = {"cells": list, "prompts": list, "methods": list, "seeds": list, "resumed": list}


def clean_manifest(manifest: object) -> dict:
    """``manifest`` as the readers expect it: a dict whose list fields are lists (cells:
    of dicts); a damaged file (not an object, a field of the wrong type) loses those parts
    instead of crashing a report.

    >>> clean_manifest([1, 2])
    {}
    >>> clean_manifest({"run_id": "r", "cells": "x", "prompts": ["a", 5]})
    {'run_id': 'r', 'prompts': ['a']}
    """
    if not isinstance(manifest, dict):
        return {}
    out = {k: v for k, v in manifest.items() if isinstance(v, MANIFEST_TYPES.get(k, object))}
    if "cells" in out:
        out["cells"] = [c for c in out["cells"] if isinstance(c, dict)]
    if "prompts" in out:
        out["prompts"] = [p for p in out["prompts"] if isinstance(p, str)]
    if "methods" in out:
        out["methods"] = [m for m in out["methods"] if isinstance(m, str)]
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(infos: list[RunInfo]) -> dict[str, list[object]]:
    """Dotted config keys whose values differ between runs -> the value of each run
    (None where a run lacks the key). Empty for a single run."""
    if len(infos) < 2:
        return {}
    flat = [flatten(info.config) for info in infos]
    keys = sorted(set().union(*flat))
    return {
        key: [f.get(key) for f in flat]
        for key in keys
        if any(f.get(key) != flat[0].get(key) for f in flat[1:])
    }
