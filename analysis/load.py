"""Load one or more run directories into one long-format DataFrame."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from results.schema import METRIC_COLUMNS


class DamagedRun(ValueError):
    """A run's metrics.parquet that cannot be read as results (one line naming the file)."""


def read_metrics(target: Path):
    """One metrics.parquet as a frame of ``METRIC_COLUMNS``; ``DamagedRun`` when it is
    unreadable, lacks a column, has no rows, or holds non-numeric seeds, steps or values."""
    import pandas as pd

    try:
        frame = pd.read_parquet(target)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        reason = " ".join(str(exc).split())[:200]
        raise DamagedRun(f"{target} is unreadable (truncated or corrupt: {reason})") from None
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise DamagedRun(f"{target} lacks the columns {missing}; not a run's metrics")
    if frame.empty:
        raise DamagedRun(f"{target} has no rows: the run logged nothing yet")
    for column in ("seed", "step", "value"):
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DamagedRun(f"{target}: column '{column}' is not numeric ({frame[column].dtype})")
    return frame


def load_results(paths: str | Path | Iterable[str | Path]):
    """Concatenate ``metrics.parquet`` of the given run dirs (or parquet files).

    Returns a pandas DataFrame with columns run_id, method, prompt, seed, step, metric, value.
    A path without results is a ``FileNotFoundError`` naming it, a damaged one ``DamagedRun``.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in map(Path, paths):
        target = path / "metrics.parquet" if path.is_dir() else path
        if not target.is_file():
            raise FileNotFoundError(f"no metrics.parquet in {path}")
        frames.append(read_metrics(target))
    if not frames:
        raise ValueError("load_results needs at least one run directory")
    return pd.concat(frames, ignore_index=True)
