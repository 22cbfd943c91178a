"""Checks of user input that the typed configs cannot make: output folders and seed lists.

Each failure is a one-line UserError raised before anything is written (the CLI prints it as
``error: ...`` and exits with code 2).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from core.errors import UserError


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder this process can write into (created if missing): a path naming
    a file, under a file, or in a read-only place is a UserError naming ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is not a folder (it is a file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to {flag} {path}: {exc.strerror or exc}") from None
    return path


def unique_seeds(seeds: list[int], warn=None) -> list[int]:
    """Seeds in order with duplicates dropped, each duplicate reported once (like duplicate
    prompts): a repeated seed would train the same cell twice.

    >>> unique_seeds([0, 1, 0, 0], warn=print)
    duplicate seed 0 is used once
    [0, 1]
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    unique = list(dict.fromkeys(seeds))
    for seed in dict.fromkeys(s for i, s in enumerate(seeds) if s in seeds[:i]):
        warn(f"duplicate seed {seed} is used once")
    return unique


def check_fixture_targets(root: str | Path, names: list[str], force: bool) -> None:
    """``make-fixtures`` replaces ``root/<name>`` folders: refuse non-empty ones (or a file
    in their place) unless ``force``."""
    for name in names:
        target = Path(root) / name
        if target.exists() and not target.is_dir():
            raise UserError(f"{target} exists and is not a folder; remove it first")
        if not force and target.is_dir() and any(target.iterdir()):
            raise UserError(
                f"{target} is not empty; make-fixtures would replace it: pass --force to "
                "overwrite, or choose another DIR"
            )


#: What a run dir holds besides report.html: ``report --out`` never writes over these.
RUN_FILES = ("metrics.parquet", "manifest.json", "config.yaml", "summary.csv", ".lock")


def check_report_out(run_dirs: list[str | Path], out: str | Path) -> Path:
    """``report RUN... --out OUT``: OUT as a Path, checked before anything is read or written.

    The report goes to OUT and summary.csv beside it, so OUT may not be a folder, be named
    summary.csv, or lie in a run dir (one given or any other: a folder with a manifest.json
    or metrics.parquet), except ``RUN/report.html`` for the single run RUN (what the run
    itself writes). Anything else would replace a run's own files; it is a UserError.
    """
    out = Path(out)
    target = out.resolve()
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as report.html")
    if target.name in RUN_FILES:
        raise UserError(f"--out {out} would replace a run's {target.name}; give report.html")
    runs = [Path(p).resolve() for p in run_dirs]
    own = len(runs) == 1 and target == runs[0] / "report.html"
    for run in runs:
        if target.is_relative_to(run) and not own:
            raise UserError(
                f"--out {out} is inside the run dir {run} and would replace its own report "
                "and summary.csv; write the report elsewhere"
            )
    folder = target.parent
    if not own and any((folder / name).exists() for name in RUN_FILES[:2]):
        raise UserError(f"--out {out} is inside the run dir {folder}; write the report elsewhere")
    return out
