"""Speed benchmarks (pytest-benchmark). `make perf` measures; `make test` runs them once as a
smoke test (--benchmark-disable). Reported as ratios measured in the same run."""

import statistics
import time
from dataclasses import replace

import pytest
import torch

from benchmark.run.config import load_config
from benchmark.run.factories import build_prior
from benchmark.run.trainer import CellHooks, CellTrainer, configure_torch, run_cell
from tests.perf.targets import check_ratio


@pytest.fixture(scope="module")
def setup():
    configure_torch(2)
    config = load_config(None, ["eval.every=1000000", "eval.snapshots=false"])
    prior = build_prior(config, ["a snowman"], torch.device("cpu"))
    return config, prior


def _trainer(setup):
    config, prior = setup
    return CellTrainer(config, "sds", "a snowman", 0, prior, torch.device("cpu"))


def test_sds_step_voxel_world(benchmark, setup):
    """One SDS step: 32x32 voxel render, world prior, backward, Adam."""
    trainer = _trainer(setup)
    counter = iter(range(10**9))
    benchmark(lambda: trainer.step(next(counter)))


def harness_config(config, steps: int):
    """``config`` with every measurement off: no probe (measure.every 0), no evaluation
    between the first and the last step, no snapshots; ``steps`` steps."""
    return replace(
        config,
        steps=steps,
        measure=replace(config.measure, every=0),
        eval=replace(config.eval, every=10**9, snapshots=False),
    )


def test_harness_overhead_ratio(benchmark, setup):
    """Harness step (run_cell: logging, counters, time split, hooks polling) / bare
    ``trainer.step``, with the probe and the evaluation off, so that it times the harness.
    Interleaved medians over fresh trainers (both sides replay the same steps 0..n-1).

    extra_info['overhead_ratio'] is the number to read; 1.0 means no overhead. Target
    <= 1.05, asserted with slack 1.1.
    """
    config, _ = setup
    n = 8 if benchmark.disabled else 40
    repeats = 1 if benchmark.disabled else 5
    quiet = harness_config(config, n)
    rows = []

    def bare():
        trainer = _trainer(setup)
        start = time.perf_counter()
        for k in range(n):
            trainer.step(k)
        return time.perf_counter() - start

    def harness():
        trainer = _trainer(setup)
        trainer.config = quiet
        rows.clear()
        start = time.perf_counter()
        run_cell(
            trainer,
            lambda b, s: {},
            lambda s, m: rows.append((s, m)),
            hooks=CellHooks(on_step=lambda d: None, stop_requested=lambda: False),
        )
        return time.perf_counter() - start

    bare()  # warm-up (first-call allocations)

    def both():
        pairs = [(bare(), harness()) for _ in range(repeats)]
        return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)

    t_bare, t_harness = benchmark.pedantic(both, rounds=1, iterations=1)
    assert not any(k.startswith("var/") for _, m in rows for k in m), "the probe ran"
    assert sum("t" in m for _, m in rows) == n  # one training row per step
    benchmark.extra_info["bare_step_ms"] = 1000 * t_bare / n
    benchmark.extra_info["harness_step_ms"] = 1000 * t_harness / n
    benchmark.extra_info["overhead_ratio"] = t_harness / t_bare
    check_ratio(benchmark, "harness_over_bare_step", t_harness / t_bare, target=1.05, slack=1.1)
