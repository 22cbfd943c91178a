"""Cells on worker threads: a 2-core CPU machine runs two world cells at once.

A world cell is many small torch ops; on one core each (``torch.set_num_threads(1)``), two
cells on two threads finish 1.5x sooner than one after the other on two intra-op threads
(measured 2026-12-01: two 300-step SDS cells 12.6 s vs 18.7 s), because small ops do not
parallelise inside an op but torch releases the GIL while they run. Every cell owns its
streams, theta, optimiser and estimator, and gets its own shallow copy of the prior (its own
``n_evals`` counter), so its numbers are the same bit for bit as when it runs alone
(tests/test_parallel_cells.py).

``run_cells`` runs ``run_one(cell, should_stop)`` for every cell on ``workers`` daemon
threads and calls ``on_done(cell, result)`` in the calling thread as cells finish.
``should_stop()`` is true on Ctrl-C (``stop()``) or once another cell failed; a cell polls
it every step and then checkpoints and raises ``CellInterrupted``. The first error of any
cell (an interrupt, a write error, a test's injected fault) is raised in the calling thread
after the running cells have stopped; cells not yet started are not started.

>>> out = []
>>> square = lambda cell, should_stop: cell * cell
>>> run_cells([1, 2, 3], square, lambda c, r: out.append((c, r)), 2, lambda: False)
>>> sorted(out)
[(1, 1), (2, 4), (3, 9)]
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence

from core.errors import UserError

_POLL_S = 0.2  # the calling thread wakes this often, so Ctrl-C reaches it while it waits


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def auto_workers(threads: int, device_type: str, world_prior: bool) -> int:
    """Worker threads when ``workers = 0`` (auto): on CPU with the world prior, one per core
    of the ``threads`` budget (at most the CPUs this process may use); otherwise 1 (a real
    model's memory and a GPU are not split)."""
    if device_type != "cpu" or not world_prior:
        return 1
    return max(1, min(threads, available_cpus() or 1))


def cell_workers(config, device) -> int:
    """Cells run at once: ``config.workers``, or with 0 (auto) ``auto_workers``. More than
    one needs the world prior on CPU (a real model's memory is not split between cells).
    Each cell then runs on ``threads_per_cell`` torch threads, whatever the number of cells
    left (a resumed run's cells get the same thread count, hence the same numbers)."""
    world = config.prior == "world"
    if config.workers == 0:
        return auto_workers(config.threads, device.type, world)
    if config.workers > 1 and (device.type != "cpu" or not world):
        raise UserError(
            f"workers={config.workers} needs --prior world on CPU; use workers=1 (or 0: auto)"
        )
    return config.workers


def resumed_workers(config, device, manifest: dict) -> int:
    """``cell_workers`` for a resumed run: with ``workers = 0`` (auto) the count the run
    started with (its manifest's ``workers``), so a resume on a machine with another number
    of CPUs keeps the thread layout, hence the numbers, bit for bit.

    >>> from types import SimpleNamespace as NS
    >>> cfg, cpu = NS(workers=0, threads=2, prior="world"), NS(type="cpu")
    >>> resumed_workers(cfg, cpu, {"workers": 2})
    2
    """
    recorded = manifest.get("workers")
    if config.workers == 0 and isinstance(recorded, int) and not isinstance(recorded, bool):
        if recorded >= 1 and (recorded == 1 or (device.type == "cpu" and config.prior == "world")):
            return recorded
    return cell_workers(config, device)


def threads_per_cell(threads: int, workers: int) -> int:
    """Torch threads of each cell: ``threads`` alone, else an equal share (at least 1).

    >>> threads_per_cell(2, 1), threads_per_cell(2, 2), threads_per_cell(8, 3)
    (2, 1, 2)
    """
    return threads if workers == 1 else max(1, threads // workers)


def run_cells(
    cells: Sequence,
    run_one: Callable,
    on_done: Callable,
    workers: int,
    stop: Callable[[], bool],
) -> None:
    """Run every cell (module doc)."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for cell in cells:
        todo.put(cell)
    finished: queue.SimpleQueue = queue.SimpleQueue()
    abort = threading.Event()

    def should_stop() -> bool:
        return stop() or abort.is_set()

    def work() -> None:
        try:
            while not should_stop():
                try:
                    cell = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    finished.put((cell, run_one(cell, should_stop), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                    abort.set()
                    finished.put((cell, None, exc))
                    return
        finally:
            finished.put(None)  # this worker is done

    count = max(1, min(workers, len(cells)))
    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    running, first_error = len(threads), None
    while running:
        try:
            item = finished.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        except BaseException:  # a second Ctrl-C here: the cells checkpoint and stop too
            abort.set()
            raise
        if item is None:
            running -= 1
            continue
        cell, result, error = item
        if error is not None:
            first_error = first_error or error
            continue
        if first_error is None:
            on_done(cell, result)
    if first_error is not None:
        raise first_error
