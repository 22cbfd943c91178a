"""CI regression of variance numbers: ``python -m benchmark regress --golden FILE``.

Runs a small fixed-seed configuration (the registry's methods marked ``in_golden``; world
prior; voxel backbone; 16x16 renders; variance probe at 0, every and last step) through
``benchmark.run.runner.run_benchmark`` in a temporary folder, and compares

    var/<variant>/log_var, var/<variant>/img_log_var, var/<variant>/nsr   at every probe step
    psnr                                                                  at the last step

against the golden file. A number passes when |current - golden| <= abs + rel * |golden|,
with (abs, rel) per statistic stored in the golden file ("tolerances"); log variances are
compared in absolute terms (an absolute difference of ln Var is a relative change of the
variance: 0.05 = 5%), nsr and psnr relatively. Non-finite numbers must match exactly (a
zero variance, ln = -inf, stays -inf). A golden number with no current counterpart fails;
a current number not in the golden file is reported as new and does not fail.

The golden file holds the configuration it was made with (``config``), so a check always
reruns exactly that configuration; ``--update`` rewrites the file atomically from the code's
``REGRESS_CONFIG`` with the reason, the date (UTC), the package versions and the commit.

It runs models through the harness (imported lazily), like benchmark.checks.tiny_runs.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmark.checks.tiny_runs import TINY_WORLD

FORMAT = 1
STATS = ("log_var", "img_log_var", "nsr")
#: one single object and one prompt that is a distribution (16 instances differing in fine detail:
#: the world's multi-instance prior, its union of references and the instance metrics' path)
REGRESS_CONFIG = {
    "prompts": ["a snowman", "a red ball with white spots"],
    "seeds": [0],
    "steps": 20,
    "overrides": [
        *TINY_WORLD,
        "eval.every=20",
        "eval.n_views=4",
        "eval.snapshots=false",
        "measure.every=10",
        "measure.samples=8",
        "measure.bootstrap=0",
        "measure.variants=[all,fixed_camera_t]",
        "threads=2",
    ],
}
TOLERANCES = {
    "log_var": {"abs": 0.05, "rel": 0.0},
    "img_log_var": {"abs": 0.05, "rel": 0.0},
    "nsr": {"abs": 0.0, "rel": 0.05},
    "psnr": {"abs": 0.0, "rel": 0.005},
}


class GoldenError(ValueError):
    """A missing or malformed golden file (bad input, exit code 2)."""


@dataclass
class Comparison:
    key: str
    stat: str
    golden: float | None
    current: float | None
    tolerance: float
    status: str  # ok | REGRESSION | missing | new

    @property
    def diff(self) -> float:
        if self.golden is None or self.current is None:
            return float("nan")
        if not (math.isfinite(self.golden) and math.isfinite(self.current)):
            return 0.0 if _same(self.golden, self.current) else float("inf")
        return self.current - self.golden

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSION", "missing")


def registered_methods() -> list[str]:
    """The methods of the registry that take part in the golden regression."""
    from estimators.registry import METHODS

    return [name for name, spec in METHODS.items() if spec.in_golden]


def default_config() -> dict:
    """The configuration ``--update`` records (methods resolved now)."""
    return {"methods": registered_methods(), **json.loads(json.dumps(REGRESS_CONFIG))}


def _stat_of(metric: str) -> str | None:
    if metric == "psnr":
        return "psnr"
    if metric.startswith("var/"):
        stat = metric.rsplit("/", 1)[-1]
        return stat if stat in STATS else None
    return None


def collect(config: dict) -> dict[str, float]:
    """Run ``config`` (a golden file's "config") and return {key: value}, keys like
    ``ssd/a snowman/s0/step00010/var/all/log_var`` and ``sds/a snowman/s0/step00020/psnr``."""
    import pandas as pd

    from benchmark.run.config import load_config
    from benchmark.run.runner import run_benchmark

    with tempfile.TemporaryDirectory(prefix="steinbench-regress-") as tmp:
        run_config = load_config(
            None,
            list(config["overrides"]),
            methods=list(config["methods"]),
            steps=int(config["steps"]),
            seeds=[int(s) for s in config["seeds"]],
            out=tmp,
        )
        path, results = run_benchmark(
            run_config,
            list(config["methods"]),
            list(config["prompts"]),
            argv=["regress"],
            quiet=True,
            report=False,
        )
        df = pd.read_parquet(Path(path) / "metrics.parquet")
    failed = [r for r in results if r.status != "ok"]
    values: dict[str, float] = {}
    last = int(config["steps"])
    for row in df.itertuples(index=False):
        stat = _stat_of(row.metric)
        if stat is None or (stat == "psnr" and row.step != last):
            continue
        key = f"{row.method}/{row.prompt}/s{row.seed}/step{row.step:05d}/{row.metric}"
        values[key] = float(row.value)
    for r in failed:  # a diverged cell is a regression of every number it should have made
        values[f"{r.method}/{r.prompt}/s{r.seed}/failed"] = float(r.failed_step or 0)
    return values


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _encode(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # "inf", "-inf", "nan"


def _decode(value) -> float:
    return float(value)


def compare(
    golden: dict[str, float], current: dict[str, float], tolerances: dict
) -> list[Comparison]:
    """Every golden and current key, compared (see module docstring)."""
    rows = []
    for key in sorted(set(golden) | set(current)):
        stat = key.rsplit("/", 1)[-1]
        tol = tolerances.get(stat, {"abs": 0.0, "rel": 0.0})
        g, c = golden.get(key), current.get(key)
        allowed = float(tol.get("abs", 0.0)) + float(tol.get("rel", 0.0)) * abs(
            g if g is not None and math.isfinite(g) else 0.0
        )
        if g is None:
            status = "new"
        elif c is None:
            status = "missing"
        elif not (math.isfinite(g) and math.isfinite(c)):
            status = "ok" if _same(g, c) else "REGRESSION"
        else:
            status = "ok" if abs(c - g) <= allowed else "REGRESSION"
        rows.append(Comparison(key, stat, g, c, allowed, status))
    return rows


def load_golden(path: str | Path) -> dict:
    """The golden file as a dict with decoded values; GoldenError if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"golden file not found: {path} (create it with --update --reason '...')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GoldenError(f"golden file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GoldenError(f"golden file {path} must hold a JSON object")
    missing = [k for k in ("config", "tolerances", "values") if k not in data]
    if missing:
        raise GoldenError(f"golden file {path} lacks {', '.join(missing)}")
    config = data["config"]
    need = ("methods", "prompts", "seeds", "steps", "overrides")
    if not isinstance(config, dict) or any(k not in config for k in need):
        raise GoldenError(f"golden file {path}: config must have {', '.join(need)}")
    _check_config(config, path)
    try:
        data["values"] = {str(k): _decode(v) for k, v in data["values"].items()}
        for stat, tol in data["tolerances"].items():
            if not isinstance(tol, dict) or any(float(tol.get(k, 0.0)) < 0 for k in ("abs", "rel")):
                raise GoldenError(f"golden file {path}: bad tolerance for {stat!r}")
    except (AttributeError, TypeError, ValueError) as exc:
        raise GoldenError(f"golden file {path} has a malformed entry: {exc}") from None
    return data


def _history(path: Path) -> list[dict]:
    """Earlier updates of an existing golden file (its history plus its own last update)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    history = [h for h in old.get("history", []) if isinstance(h, dict)]
    if "updated" in old:
        history.append({k: old.get(k) for k in ("updated", "reason", "git_commit")})
    return history


def write_golden(path: str | Path, config: dict, values: dict[str, float], reason: str) -> Path:
    """Write the golden file atomically (temp file in the same folder, fsync, rename); the
    reasons of earlier updates are kept in ``history``."""
    from results.atomic import atomic_write_text
    from results.provenance import git_commit, package_versions

    path = Path(path)
    history = _history(path)
    data = {
        "format": FORMAT,
        "reason": reason,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "comparison": "pass iff |current - golden| <= abs + rel * |golden|; "
        "non-finite values must match exactly",
        "tolerances": TOLERANCES,
        "config": config,
        "values": {k: _encode(v) for k, v in sorted(values.items())},
        "history": history,
    }
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write_text(path, text)


def _split(key: str) -> tuple[str, str, str, str]:
    """'ssd/a snowman/s0/step00010/var/all/log_var' -> (method, 'a snowman s0', '10',
    'all/log_var')."""
    parts = key.split("/")
    if len(parts) >= 5 and parts[3].startswith("step"):
        metric = "/".join(parts[4:])
        metric = metric[len("var/") :] if metric.startswith("var/") else metric
        return parts[0], f"{parts[1]} {parts[2]}", str(int(parts[3][4:])), metric
    return parts[0], " ".join(parts[1:-1]), "", parts[-1]


def print_table(rows: list[Comparison], console, only_failures: bool = False) -> None:
    """The differences as a rich table: one row per number."""
    from rich import box
    from rich.table import Table

    cells = {_split(r.key)[1] for r in rows}
    table = Table(
        title="regress: current vs golden" + (f" ({next(iter(cells))})" if len(cells) == 1 else ""),
        box=box.SIMPLE_HEAD,
    )
    columns = ["method", *([] if len(cells) == 1 else ["cell"]), "step", "number"]
    columns += ["golden", "current", "diff", "tol", "status"]
    for name in columns:
        table.add_column(
            name,
            justify="right" if name in ("step", "golden", "current", "diff", "tol") else "left",
        )

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.5g}"

    for row in rows:
        if only_failures and not row.failed:
            continue
        method, cell, step, number = _split(row.key)
        style = "red" if row.failed else ("yellow" if row.status == "new" else None)
        values = [method, *([] if len(cells) == 1 else [cell]), step, number]
        values += [fmt(row.golden), fmt(row.current), fmt(row.diff), f"{row.tolerance:.2g}"]
        table.add_row(*values, row.status, style=style)
    console.print(table)


def _check_config(config: dict, path: Path) -> None:
    """The golden config's steps, seeds, methods, prompts and overrides are valid before
    anything runs: a malformed golden file is bad input (exit 2), never a regression."""
    from benchmark.run.config import load_config
    from core.errors import UserError
    from estimators.registry import METHODS
    from world.distributions import all_prompts

    def fail(what: str) -> GoldenError:
        return GoldenError(f"golden file {path}: config {what}")

    steps, seeds = config["steps"], config["seeds"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise fail(f"'steps' must be an integer >= 1, got {steps!r}")
    for key in ("methods", "prompts", "seeds", "overrides"):
        if not isinstance(config[key], list) or (key != "overrides" and not config[key]):
            raise fail(f"'{key}' must be a non-empty list, got {config[key]!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63 for s in seeds):
        raise fail(f"'seeds' must be integers in [0, 2**63), got {seeds!r}")
    unknown = [m for m in config["methods"] if m not in METHODS]
    if unknown:
        raise fail(f"names an unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    known = all_prompts()
    unknown = [p for p in config["prompts"] if p not in known]
    if unknown:
        raise fail(f"names a prompt the world does not know: {unknown[0]!r}")
    if not all(isinstance(o, str) for o in config["overrides"]):
        raise fail("'overrides' must be a list of 'key=value' strings")
    try:
        load_config(None, list(config["overrides"]), steps=steps, seeds=list(seeds))
    except UserError as exc:
        raise fail(f"is invalid: {exc}") from None


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=120)


def check(golden_path: str | Path, console=None) -> tuple[int, list[Comparison]]:
    """Run the golden file's config and compare; returns (exit code 0 or 1, rows)."""
    console = console or _console()
    golden = load_golden(golden_path)
    current = collect(golden["config"])
    rows = compare(golden["values"], current, golden["tolerances"])
    print_table(rows, console)
    failures = [r for r in rows if r.failed]
    new = [r for r in rows if r.status == "new"]
    console.print(
        f"regress: {len(rows)} numbers, {len(failures)} outside tolerance"
        + (f", {len(new)} new (not in the golden file)" if new else "")
        + f"; golden: {golden_path} (updated {golden.get('updated', '?')}: "
        f"{golden.get('reason', '')})",
        markup=False,
        highlight=False,
    )
    return (1 if failures else 0), rows


def update(golden_path: str | Path, reason: str, console=None) -> Path:
    """Rerun the code's REGRESS_CONFIG and rewrite the golden file with ``reason``."""
    console = console or _console()
    if not reason or not reason.strip():
        raise GoldenError("--update needs --reason '...' (why the numbers changed)")
    config = default_config()
    values = collect(config)
    path = write_golden(golden_path, config, values, reason.strip())
    console.print(f"regress: wrote {len(values)} numbers to {path}", markup=False)
    return path
