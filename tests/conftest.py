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
