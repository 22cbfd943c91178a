import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="steinbench-ext-"))
# quality ceilings (evaluation/ceiling.py) are cached here, never in the user's ~/.cache
os.environ.setdefault("STEINBENCH_CACHE", tempfile.mkdtemp(prefix="steinbench-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def world_prior_small():
    """A small world prior (16x16, 8 x 2 reference views) shared by the unit tests."""
    from world.prior import WorldPrior, WorldPriorConfig

    config = WorldPriorConfig(n_azimuth=8, elevations=(0.0, 30.0), supersample=1)
    return WorldPrior(["a red sphere", "a snowman"], 16, 16, 2.5, 40.0, config=config)
