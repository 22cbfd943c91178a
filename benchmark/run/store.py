"""The results writer: runs/<run_id>/ with config, manifest, long-format metrics, snapshots.

The layout and names are ``results.schema``'s (the reader, ``analysis``, imports the same);
every file goes through ``results.atomic.atomic_write_bytes``, so a kill at any point leaves
either the previous complete file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from core.errors import UserError
from results.atomic import atomic_write_bytes
from results.schema import METRIC_COLUMNS, METRICS_FILE, SNAPSHOT_DIR


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


class RunStore:
    """Writes one run directory. Metric rows are buffered and flushed as one parquet file
    (rewritten whole and atomically at every flush: a kill never leaves a partial file).

    Thread-safe (cells on worker threads, benchmark/run/parallel_cells.py): rows are logged,
    dropped and flushed under one lock. With ``cell_order`` (cell key (method, prompt, seed)
    -> rank) a flush writes the cells' rows in that order (a stable sort: each cell's rows
    keep their order), so the file does not depend on which cell finished first."""

    def __init__(self, root: str | Path, run_id: str | None = None, exist_ok: bool = False):
        self.run_id = run_id or new_run_id()
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=exist_ok)
        self.rows: list[tuple] = []
        self.cell_order: dict[tuple, int] | None = None
        self._lock = threading.RLock()

    @classmethod
    def reopen(cls, run_dir: str | Path) -> RunStore:
        """An existing run dir with its metric rows loaded (for resume). A metrics file that
        cannot be read is a UserError; the file is left as it is."""
        path = Path(run_dir)
        store = cls(path.parent, path.name, exist_ok=True)
        target = path / METRICS_FILE
        if target.exists():
            import pandas as pd

            try:
                frame = pd.read_parquet(target)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
                reason = " ".join(str(exc).split())[:200]
                raise UserError(
                    f"{target} is unreadable (truncated or corrupt: {reason}); it was left "
                    "untouched"
                ) from None
            if list(frame.columns) != list(METRIC_COLUMNS):
                raise UserError(f"{target} has unexpected columns {list(frame.columns)}")
            store.rows = list(frame.itertuples(index=False, name=None))
        return store

    def drop_rows(self, method: str, prompt: str, seed: int, after_step: int = -1) -> None:
        """Forget the cell's rows with step > ``after_step`` (all of them by default)."""
        with self._lock:
            self.rows = [
                r
                for r in self.rows
                if not (r[1] == method and r[2] == prompt and r[3] == seed and r[4] > after_step)
            ]

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        atomic_write_bytes(target, text.encode("utf-8"))
        return target

    def write_json(self, name: str, data: dict) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True, default=str))

    def log(self, method: str, prompt: str, seed: int, step: int, metrics: dict) -> None:
        rows = [
            (self.run_id, method, prompt, seed, step, metric, float(value))
            for metric, value in metrics.items()
        ]
        with self._lock:
            self.rows.extend(rows)

    def flush_metrics(self) -> Path:
        import pandas as pd

        with self._lock:
            rows = self.rows
            if self.cell_order is not None:
                order, last = self.cell_order, len(self.cell_order)
                rows = sorted(rows, key=lambda r: order.get((r[1], r[2], r[3]), last))
            frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
            frame = frame.astype({"seed": "int64", "step": "int64", "value": "float64"})
            target = self.path / METRICS_FILE
            atomic_write_bytes(target, frame.to_parquet(index=False))
        return target

    def save_image(self, name: str, image) -> Path:
        """Save a [3, H, W] or [H, W, 3] float tensor/array in [0, 1] as PNG."""
        import io

        import numpy as np
        from PIL import Image

        array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.transpose(1, 2, 0)
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).squeeze()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        target = self.path / SNAPSHOT_DIR / name
        atomic_write_bytes(target, buffer.getvalue())
        return target
