import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="steinbench-ext-"))
# quality ceilings (evaluation/ceiling.py) are cached here, never in the user's ~/.cache
os.environ.setdefault("STEINBENCH_CACHE", tempfile.mkdtemp(prefix="steinbench-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402


def _thread_cap() -> int | None:
    """Torch threads per pytest-xdist worker: the cores shared out (``make test`` runs
    ``pytest -n 2``), so 2 workers x 2 threads do not oversubscribe 2 cores; None serially."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if "PYTEST_XDIST_WORKER" not in os.environ or workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


_CAP = _thread_cap()
if _CAP is not None:
    # Runs set their own thread count (``threads`` in the run config, 2 by default, and tests
    # at module level): under xdist every request is capped at the worker's share. Numbers
    # compared bit for bit are always produced in one process, hence at one thread count.
    os.environ["OMP_NUM_THREADS"] = str(_CAP)  # subprocesses the tests start
    _set_num_threads = torch.set_num_threads
    torch.set_num_threads = lambda n: _set_num_threads(min(int(n), _CAP))

torch.set_num_threads(2)
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def world_prior_small():
    """A small world prior (16x16, 8 x 2 reference views) shared by the unit tests."""
    from world.prior import WorldPrior, WorldPriorConfig

    config = WorldPriorConfig(n_azimuth=8, elevations=(0.0, 30.0), supersample=1)
    return WorldPrior(["a red sphere", "a snowman"], 16, 16, 2.5, 40.0, config=config)


#: The test files that take longest under ``make test`` (one torch thread per worker), longest
#: first. ``make test`` hands whole files to its workers in collection order (``--dist loadfile
#: --no-loadscope-reorder``), so these go out first and no long file starts last on one worker
#: while the other idles (longest-first list scheduling); the other files with ``slow`` tests
#: follow, then the rest in their usual order. A file missing here costs balance, never a test.
#: Ordered by the files' summed test durations in a quiet 2-worker run (2026-12-08: soak 277 s,
#: round3_runs 103, end_to_end 88, resume 86, sweep 82, learned_prior 81, real_models 53,
#: report 40, gaussians 38, scale 38, clip_ranking 37, ...); with the older order the report
#: file (40 s) started last on one worker and ended 19 s after the other worker had finished.
LONGEST_FIRST: tuple[str, ...] = tuple(
    f"tests/test_{name}.py"
    for name in (
        "reliability_soak",
        "reliability_round3_runs",
        "end_to_end",
        "resume",
        "sweep",
        "learned_prior",
        "real_models",
        "report",
        "gaussians",
        "scale",
        "clip_ranking",
        "reliability_e2e",
        "world_phenomena",
        "gaussians_resume",
        "regress",
        "doctor",
        "variance_ci",
        "verdict",
        "world_metrics",
        "cli_errors",
        "parallel_cells",
        "convergence_analysis",
        "hashgrid",
        "capabilities",
        "fault_isolation",
    )
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}

    def key(item) -> tuple[int, int]:
        path = item.nodeid.split("::")[0]
        if path in rank:
            return (0, rank[path])
        return (1, 0) if path in slow_files else (2, 0)

    items.sort(key=key)  # stable: a file's tests keep their order
