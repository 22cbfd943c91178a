"""Sweeps: methods x prompts x seeds x grid points, one task per cell, local or on Ray.

Modules, one job each: ``spec`` (the strict spec and its expansion into validated cells),
``task`` (one cell as a one-cell run), ``faults`` (the test hook that makes cells fail),
``executors`` (local process pool, Ray), ``driver`` (retries, manifest, combined metrics,
``python -m benchmark sweep``). Names are imported lazily.
"""

from core.lazy import lazy_exports

_EXPORTS = {
    "INJECT_ENV": "benchmark.sweep.faults",
    "injected_failures": "benchmark.sweep.faults",
    "SweepSpec": "benchmark.sweep.spec",
    "load_sweep": "benchmark.sweep.spec",
    "expand": "benchmark.sweep.spec",
    "run_cell_task": "benchmark.sweep.task",
    "make_executor": "benchmark.sweep.executors",
    "run_sweep": "benchmark.sweep.driver",
    "main_sweep": "benchmark.sweep.driver",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("benchmark.sweep", _EXPORTS)
