"""The run-dir lock: one process at a time writes a run dir (``run``, ``resume``, a sweep cell).

An OS lock (``fcntl.flock``, exclusive, non-blocking) on ``RUN_DIR/.lock`` is taken before
anything in the run dir is read for resuming or written, and held for the run's whole life.
The kernel drops it when the holder exits, however it exits (``kill -9`` included), so a
stale lock cannot exist and there is no liveness check to race: a second ``resume`` of a run
that is still going fails at once with the holder's pid, which the holder writes into the
lock file after it has the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run dir's lock; ``acquire`` raises a one-line
    UserError when another process holds it or the lock file cannot be created."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if self.fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(
                f"cannot lock run {self.run_dir}: {exc.strerror or exc} ({self.path})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"run {self.run_dir} is in use by another process (pid {holder}); "
                "wait for it to end or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would let two processes lock two
        different files of the same name)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
