"""Speed benchmarks (pytest-benchmark). `make perf` measures; `make test` runs them once as a
smoke test (--benchmark-disable). Reported as ratios measured in the same run."""

import time

import pytest
import torch

from benchmark.run.config import load_config
from benchmark.run.factories import build_prior
from benchmark.run.trainer import CellTrainer, configure_torch, run_cell
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


def test_harness_overhead_ratio(benchmark, setup):
    """Harness step (logging, progress callback, off-checkpoint) / bare step, same run.

    extra_info['overhead_ratio'] is the number to read; 1.0 means no overhead.
    """
    config, _ = setup
    n = 40

    def bare():
        trainer = _trainer(setup)
        start = time.perf_counter()
        for k in range(n):
            trainer.step(k)
        return time.perf_counter() - start

    def harness():
        trainer = _trainer(setup)
        rows = []
        trainer.config = load_config(None, [f"steps={n}", "eval.every=1000000"])
        start = time.perf_counter()
        run_cell(trainer, lambda b, s: {}, lambda s, m: rows.append((s, m)), lambda d: None)
        return time.perf_counter() - start

    def both():
        return bare(), harness()

    t_bare, t_harness = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info["bare_step_ms"] = 1000 * t_bare / n
    benchmark.extra_info["harness_step_ms"] = 1000 * t_harness / n
    benchmark.extra_info["overhead_ratio"] = t_harness / t_bare
    check_ratio(benchmark, "harness_over_bare_step", t_harness / t_bare, target=1.05, slack=1.1)
