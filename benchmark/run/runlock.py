"""The run-dir lock: one process at a time writes a run dir (``run``, ``resume``, a sweep cell).

An OS lock (``fcntl.flock``, exclusive, non-blocking) on the run directory's own descriptor
(``open(RUN_DIR, O_DIRECTORY)``) is taken before anything in the run dir is read for resuming
or written, and held for the run's whole life. The lock belongs to the directory itself, not
to a file in it: deleting, replacing or symlinking ``RUN_DIR/.lock`` changes nothing. The
kernel drops it when the holder exits, however it exits (``kill -9`` included), so a stale
lock cannot exist and there is no liveness check to race.

``RUN_DIR/.lock`` only tells a second process who holds the lock: the holder writes its pid
there after taking the lock, by an atomic rename (a symlink or FIFO at that name is replaced,
never followed or opened), and the pid is read with ``O_NOFOLLOW | O_NONBLOCK``. A refused
process names the holder only once ``.lock`` names a live process (it may still hold the last,
dead holder's pid for a moment after a race), else "unknown".
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from core.errors import UserError

LOCK_FILE = ".lock"
_POLL_S = 0.1  # how often ``acquire(wait=...)`` tries again
HOLDER_WAIT_S = 1.0  # how long a refused process waits for the holder to write its pid


def read_holder(path: Path) -> str:
    """The pid written at ``path``, or "unknown" (missing, a symlink, not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "unknown"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "unknown"
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return text if text.isdigit() else "unknown"
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return pid > 0


class RunLock:
    """``with RunLock(run_dir):`` holds the run dir's lock; ``acquire`` raises a one-line
    UserError when another process holds it (after waiting up to ``wait`` seconds for it to
    let go) or the run dir cannot be opened."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, wait: float = 0.0) -> RunLock:
        if self.fd is not None:
            return self
        deadline = time.monotonic() + wait
        try:
            fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            reason = "not a folder" if isinstance(exc, NotADirectoryError) else exc.strerror
            raise UserError(f"cannot lock run {self.run_dir}: {reason or exc}") from None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                    continue
            os.close(fd)
            raise UserError(
                f"run {self.run_dir} is in use by another process (pid {self._holder()}); "
                "wait for it to end or stop it first"
            ) from None
        self.fd = fd
        self._write_holder()
        return self

    def _holder(self) -> str:
        """The holder's pid, or "unknown". The holder writes it just after taking the lock,
        so a process that lost a race for the lock may still find the last holder's pid
        there: read again for up to ``HOLDER_WAIT_S`` until it names a live process; a dead
        one is never named."""
        deadline = time.monotonic() + HOLDER_WAIT_S
        while True:
            holder = read_holder(self.path)
            if holder != "unknown" and pid_alive(int(holder)):
                return holder
            if time.monotonic() >= deadline:
                return "unknown"
            time.sleep(_POLL_S / 5)

    def _write_holder(self) -> None:
        """Our pid into ``.lock`` by an atomic rename; best effort (a read-only run dir
        still runs into its first write, which says so in one line)."""
        from results.atomic import atomic_write_text

        try:
            atomic_write_text(self.path, f"{os.getpid()}\n")
        except OSError:
            pass

    def release(self) -> None:
        """Drop the lock (``.lock`` stays: it only names the last holder)."""
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
