"""The sweep spec: strict, expanded into cells whose RunConfigs are built and validated
before anything runs (methods x prompts x seeds x a grid of config values)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.run.typed_config import from_dict, set_dotted, to_dict
from benchmark.run.yaml_io import read_yaml_mapping
from core.errors import ConfigError
from results.schema import cell_id

SWEEP_AXES = ("methods", "seeds", "prompts_file", "out")  # set per cell, not grid keys
#: Default cap on the cells of one sweep (``--max-cells N`` raises it): a typo in a grid can
#: otherwise expand into millions of cells, each validated and held in memory.
MAX_CELLS = 10_000
PROGRESS_EVERY = 1000  # cells between progress lines while expanding a large spec


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


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _check_spec(spec: SweepSpec) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.name):
        raise ConfigError(f"bad name {spec.name!r}: use letters, digits, '.', '_', '-'")
    if not spec.methods:
        raise ConfigError("'methods' must list at least one method")
    if not spec.seeds:
        raise ConfigError("'seeds' must list at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"'seeds' has duplicates: {spec.seeds}")
    bad = [s for s in spec.seeds if not 0 <= s < 2**63]
    if bad:
        raise ConfigError(f"'seeds' must lie in [0, 2**63), got {bad[0]}")
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
        seen: set[str] = set()
        for value in values:
            text = json.dumps(value, sort_keys=True, default=str)
            if text in seen:
                raise ConfigError(f"grid key '{key}' lists the value {value!r} twice")
            seen.add(text)
        out[key] = values
    return out


def load_sweep(
    spec_path: str | Path,
    retries: int | None = None,
    max_cells: int = MAX_CELLS,
    progress: Callable[[str], None] | None = None,
) -> Sweep:
    """Read, validate and expand a sweep spec; every cell's RunConfig is built here, so a bad
    value is a ConfigError (one line) before anything runs or is written. More than
    ``max_cells`` cells is an error saying how many and how to allow them; ``progress`` gets
    a line every PROGRESS_EVERY cells while a large spec is expanded and validated."""
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
    if max_cells < 1:
        raise ConfigError(f"--max-cells must be >= 1, got {max_cells}")
    return expand(spec, path.parent, grid, str(path), max_cells, progress)


def _resolve_prompts(spec: SweepSpec, root: Path) -> list[str]:
    from benchmark.run.prompts import read_prompts, validate_prompts
    from world.distributions import all_prompts

    if spec.prompts_file is not None:
        prompts = read_prompts(root / spec.prompts_file)
    else:
        prompts = list(dict.fromkeys(spec.prompts))
    validate_prompts(prompts, all_prompts())
    return prompts


def expand(
    spec: SweepSpec,
    root: Path,
    grid: dict[str, list],
    source: str = "spec",
    max_cells: int = MAX_CELLS,
    progress: Callable[[str], None] | None = None,
) -> Sweep:
    """Cells = methods x prompts x seeds x grid points, each with its validated RunConfig.
    The count is checked against ``max_cells`` before any cell is built."""
    from benchmark.run.config import RunConfig
    from benchmark.run.factories import validate_methods

    methods = validate_methods(spec.methods)
    prompts = _resolve_prompts(spec, root)
    total = len(methods) * len(prompts) * len(spec.seeds) * math.prod(map(len, grid.values()))
    if total > max_cells:
        sizes = " x ".join(str(n) for n in (len(methods), len(prompts), len(spec.seeds)))
        sizes += "".join(f" x {len(v)}" for v in grid.values())
        raise ConfigError(
            f"sweep spec {source} expands to {total:,} cells ({sizes}), more than the cap of "
            f"{max_cells:,}; shrink the grid or pass --max-cells {total} to run them all"
        )
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
        cid = cell_id(method, prompt, seed, point, prompts)
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
        if progress is not None and len(cells) % PROGRESS_EVERY == 0:
            progress(f"sweep spec {source}: {len(cells):,}/{total:,} cells expanded and validated")
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
