"""Executors of sweep cell tasks: a local process pool or Ray (imported only when used)."""

from __future__ import annotations

from typing import Any

from benchmark.sweep.spec import Resources
from benchmark.sweep.task import error_line, run_cell_task
from core.errors import UserError

RAY_MISSING = "the ray executor needs Ray; install the ray extra: pip install -e .[ray]"


class LocalExecutor:
    """A spawn-context process pool; a dead worker breaks the pool, which is then rebuilt
    (each in-flight cell of the broken pool is charged one attempt)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = None

    def start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, task: dict):
        return self.pool.submit(run_cell_task, task)

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
            # every in-flight future belongs to the broken pool and is done after shutdown
            self.pool.shutdown(wait=True)
            done = [f for f in handles if f.done()]
            self.start()
        out = []
        for future in done:
            try:
                out.append((future, future.result(), None))
            except BrokenProcessPool as exc:
                out.append((future, None, f"worker process died: {error_line(exc)}"))
            except Exception as exc:  # noqa: BLE001 - a failed cell, recorded and retried
                out.append((future, None, error_line(exc)))
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

    def wait(self, handles: list) -> list[tuple[Any, dict | None, str | None]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref), None))
            except Exception as exc:  # noqa: BLE001 - task error or dead worker: retried
                out.append((ref, None, error_line(exc)))
        return out

    def shutdown(self, cancel: bool = False, handles: list = ()) -> None:
        for ref in handles if cancel else ():
            self.ray.cancel(ref, force=True)
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a ``HOST:PORT`` / ``ray://HOST:PORT`` Ray address does not
    answer: ``ray.init`` itself retries for minutes. ``auto`` and ``local`` pass as is."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"bad --address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


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
