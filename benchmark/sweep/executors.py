"""Executors of sweep cell tasks: a local process pool or Ray (imported only when used)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from benchmark.sweep.spec import Resources
from benchmark.sweep.task import error_line, run_cell_task
from core.errors import UserError

RAY_MISSING = "the ray executor needs Ray; install the ray extra: pip install -e .[ray]"


_REPORTS = None  # in a local worker: the queue to the driver (set by _init_worker)
_DRIVER: int | None = None  # in a local worker: the driver's pid
ORPHAN_POLL_S = 0.5  # how often a local worker checks that its driver is alive
ORPHAN_GRACE_S = 300.0  # then how long its running cell has to stop after its step


def _init_worker(reports) -> None:
    global _REPORTS, _DRIVER
    _REPORTS, _DRIVER = reports, os.getppid()
    threading.Thread(target=_watch_driver, name="driver-watch", daemon=True).start()


def _orphaned() -> bool:
    """True when this worker's driver is gone (``kill -9``, or SIGTERM, which the driver
    does not catch): the worker was re-parented."""
    return _DRIVER is not None and os.getppid() != _DRIVER


def _watch_driver() -> None:
    """A worker whose driver died stops: SIGTERM to itself (a running cell finishes its step,
    writes a checkpoint and releases its cell dir's lock; an idle worker just ends), and exit
    if that has not happened within ``ORPHAN_GRACE_S``. Without this a worker of a killed
    driver ran its cell to the end, into a dir that a rerun of the sweep was already using,
    and then waited for work forever."""
    while not _orphaned():
        time.sleep(ORPHAN_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(1)


def _run_reported(task: dict) -> dict:
    """``run_cell_task`` in a local worker, first telling the driver which process runs
    which attempt (SimpleQueue: written before the cell starts, no feeder thread to lose).
    An orphaned worker (its driver died) runs nothing and exits after its cell stops."""
    if _orphaned():
        os._exit(1)
    if _REPORTS is not None:
        _REPORTS.put((task["cell_id"], task["attempt"], os.getpid()))
    try:
        return run_cell_task(task)
    finally:
        if _orphaned():  # nobody reads the result; do not take another cell
            os._exit(1)


class LocalExecutor:
    """A spawn-context process pool. A dead worker breaks the pool, which fails every
    in-flight future; the pool is then rebuilt and only the cell whose worker died is
    charged an attempt: each task reports its worker's pid when it starts, and after the
    shutdown the dead worker is the one whose exit code is neither 0 nor -SIGTERM (the
    pool stops the others with SIGTERM; a running cell then stops after its step with a
    checkpoint and its worker exits 0). The others are handed back uncharged. When no dead
    worker can be told apart, every started cell is charged (so a cell that kills its
    worker always runs out of retries)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = None
        self.keys: dict = {}  # future -> (cell_id, attempt)
        self.pids: dict = {}  # (cell_id, attempt) -> worker pid

    def start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self.reports = context.SimpleQueue()
        self.pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.reports,),
        )
        # private but stable since 3.9: pid -> Process of every worker, for the exit codes
        self.processes = self.pool._processes

    def submit(self, task: dict):
        future = self.pool.submit(_run_reported, task)
        self.keys[future] = (task["cell_id"], task["attempt"])
        return future

    def _drain(self) -> None:
        while not self.reports.empty():
            cell, attempt, pid = self.reports.get()
            self.pids[(cell, attempt)] = pid

    def _culprits(self, broken: list) -> set:
        """The futures whose worker died (see the class docstring)."""
        innocent = (0, -signal.SIGTERM)
        pids = {f: self.pids.get(self.keys[f]) for f in broken}
        codes = {f: getattr(self.processes.get(pid), "exitcode", None) for f, pid in pids.items()}
        dead = {f for f in broken if pids[f] is not None and codes[f] not in innocent}
        started = {f for f in broken if pids[f] is not None}
        return dead or started or set(broken)

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None, bool]]:
        """(handle, result, error, charged) of the futures that are done."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        self._drain()
        culprits = set(done)
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
            # every in-flight future belongs to the broken pool and is done after shutdown
            self.pool.shutdown(wait=True)
            self._drain()
            done = [f for f in handles if f.done()]
            culprits = self._culprits(
                [f for f in done if isinstance(f.exception(), BrokenProcessPool)]
            )
            self.start()
        out = []
        for future in done:
            self.keys.pop(future, None)
            try:
                out.append((future, future.result(), None, True))
            except BrokenProcessPool as exc:
                if future in culprits:
                    out.append((future, None, f"worker process died: {error_line(exc)}", True))
                else:
                    why = "another cell's worker died; the pool was restarted"
                    out.append((future, None, why, False))
            except Exception as exc:  # noqa: BLE001 - a failed cell, recorded and retried
                out.append((future, None, error_line(exc), True))
        return out

    def shutdown(self, cancel: bool = False, handles: list = ()) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self.pool = None


class RayExecutor:
    """Ray tasks with the spec's resources; Ray's own retries are off (the sweep counts
    attempts). Uses a running Ray (``ray.is_initialized()``) as is, otherwise starts a local
    one or joins ``address``, and then shuts it down at the end. Workers import this package
    (a local Ray starts them in the driver's folder; cluster nodes need it installed) and
    write to the sweep dir, so on a multi-node cluster it must be on a shared filesystem."""

    name = "ray"

    def __init__(self, resources: Resources, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(RAY_MISSING) from None
        if address is not None:
            probe_address(address)
        self.ray = ray
        self.resources = resources
        self.address = address
        self.owned = False
        self.remote = None

    def start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f" at {self.address}" if self.address else ""
                raise UserError(f"cannot start or reach Ray{where}: {error_line(exc)}") from None
            self.owned = True
        self.remote = ray.remote(
            num_cpus=self.resources.num_cpus,
            num_gpus=self.resources.num_gpus,
            max_retries=0,
        )(run_cell_task)

    def submit(self, task: dict):
        return self.remote.remote(task)

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None, bool]]:
        """(handle, result, error, charged): a dead Ray worker fails only its own task."""
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref), None, True))
            except Exception as exc:  # noqa: BLE001 - task error or dead worker: retried
                out.append((ref, None, error_line(exc), True))
        return out

    def shutdown(self, cancel: bool = False, handles: list = ()) -> None:
        for ref in handles if cancel else ():
            self.ray.cancel(ref, force=True)
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False


#: HTTP/2 client preface and an empty SETTINGS frame: every gRPC server (Ray's GCS at
#: HOST:PORT and the Ray Client server at ray://HOST:PORT) answers with a SETTINGS frame.
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def speaks_grpc(reply: bytes) -> bool:
    """True when ``reply`` starts with an HTTP/2 SETTINGS frame header (type 4, stream 0).

    >>> speaks_grpc(bytes([0, 0, 6, 4, 0, 0, 0, 0, 0])), speaks_grpc(b"HTTP/1.1 400 Bad")
    (True, False)
    """
    return len(reply) >= 9 and reply[3] == 4 and reply[5:9] == bytes(4)


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a ``HOST:PORT`` / ``ray://HOST:PORT`` Ray address does not
    answer, or answers but is no gRPC server (a web server, another service): ``ray.init``
    itself retries for minutes. ``auto`` and ``local`` pass as is."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"bad --address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(HTTP2_HELLO)
            reply = b""
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        reply = b""
    except OSError as exc:
        raise UserError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None
    if not speaks_grpc(reply):
        raise UserError(
            f"{address} answers but is not a Ray head (no gRPC reply within {timeout:g} s): "
            "check the port (Ray's GCS, default 6379, or ray://HOST:10001 for Ray Client)"
        )


def make_executor(kind: str, workers: int | None, resources: Resources, address: str | None):
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if kind == "local":
        if address is not None:
            raise UserError("--address is only used with --executor ray")
        return LocalExecutor(workers or 1)
    if kind == "ray":
        return RayExecutor(resources, address)
    raise UserError(f"unknown executor '{kind}'; use local or ray")
