"""Load one or more run directories into one long-format DataFrame."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def load_results(paths: str | Path | Iterable[str | Path]):
    """Concatenate ``metrics.parquet`` of the given run dirs (or parquet files).

    Returns a pandas DataFrame with columns run_id, method, prompt, seed, step, metric, value.
    A path without results is a ``FileNotFoundError`` naming it.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in map(Path, paths):
        target = path / "metrics.parquet" if path.is_dir() else path
        if not target.is_file():
            raise FileNotFoundError(f"no metrics.parquet in {path}")
        frames.append(pd.read_parquet(target))
    if not frames:
        raise ValueError("load_results needs at least one run directory")
    return pd.concat(frames, ignore_index=True)
