"""The one atomic write: a kill at any point leaves the previous file or the new one.

The temporary file lives in the target's folder (same filesystem), is fsynced, given the
permissions a plain ``open`` would give under the process umask, then renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def stale_temp_files(folder: str | Path) -> list[Path]:
    """Temporary files an interrupted atomic write left in ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(f".*{TEMP_SUFFIX}") if p.is_file())


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete ``stale_temp_files(folder)`` and return them. Only for a folder no other
    process is writing (a run dir whose lock is held: benchmark.run.runlock)."""
    removed = []
    for path in stale_temp_files(folder):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
