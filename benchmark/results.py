"""The results store: runs/<run_id>/ with config, manifest, long-format metrics, snapshots.

Every file is written atomically (temp file in the same folder, fsync, rename), so a kill at
any point leaves either the previous complete file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

METRIC_COLUMNS = ("run_id", "method", "prompt", "seed", "step", "metric", "value")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


class RunStore:
    """Writes one run directory. Metric rows are buffered and flushed as one parquet file."""

    def __init__(self, root: str | Path, run_id: str | None = None) -> None:
        self.run_id = run_id or new_run_id()
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=False)
        self.rows: list[tuple] = []

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        atomic_write_bytes(target, text.encode("utf-8"))
        return target

    def write_json(self, name: str, data: dict) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True, default=str))

    def log(self, method: str, prompt: str, seed: int, step: int, metrics: dict) -> None:
        for metric, value in metrics.items():
            self.rows.append((self.run_id, method, prompt, seed, step, metric, float(value)))

    def flush_metrics(self) -> Path:
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS))
        frame = frame.astype({"seed": "int64", "step": "int64", "value": "float64"})
        target = self.path / "metrics.parquet"
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
        target = self.path / "snapshots" / name
        atomic_write_bytes(target, buffer.getvalue())
        return target
