"""Speed of the 3D backbones (pytest-benchmark) at 64x64 rays x 64 samples (262k points),
forward + backward to every parameter, on 2 threads. `make perf` measures; `make test` runs
each once as a smoke test (--benchmark-disable).

- ``field``: the field alone, query(points) -> sigma, colour (docs/hashgrid.md's figure; targets,
  medians: hash grid (default HashGridConfig) <= 0.5 s, voxel grid 64^3 <= 50 ms);
- ``render``: the whole render (ray set-up, blob, nerfacc compositing) + backward.

The torch.compile / eager ratio is opt-in (STEINBENCH_PERF_COMPILE=1): its first compile
takes tens of seconds on 2 cores.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from backbones.hashgrid import HashGridConfig, HashGridNeRF
from backbones.voxel import VoxelConfig, VoxelGrid
from core.cameras import orbit_cameras

SIZE, SAMPLES = 64, 64


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    yield
    torch.set_num_threads(threads)


def _camera():
    return orbit_cameras(1, (20.0,), 2.5, 40.0)


def fwd_bwd(backbone: torch.nn.Module, camera) -> None:
    backbone.zero_grad(set_to_none=True)
    backbone.render(camera, SIZE, SIZE)["rgb"].sum().backward()


def _points() -> torch.Tensor:
    """The 64x64 x 64 sample points of one camera, [4096, 64, 3]."""
    from backbones.volume import stratified_samples

    return stratified_samples(_camera(), SIZE, SIZE, SAMPLES, 1.0)[0]


def field_fwd_bwd(backbone: torch.nn.Module, points: torch.Tensor) -> None:
    backbone.zero_grad(set_to_none=True)
    sigma, color = backbone.query(points)
    (sigma.sum() + color.sum()).backward()


def test_hashgrid_field_fwd_bwd_64x64x64(benchmark):
    """Default hash grid field (8 levels x 2, 2^15, 32-unit MLPs) at 262k points."""
    model = HashGridNeRF(HashGridConfig(), generator=torch.Generator())
    points = _points()
    field_fwd_bwd(model, points)
    benchmark.pedantic(field_fwd_bwd, (model, points), rounds=5, iterations=1)
    assert model.encoding.params.grad is not None


def test_voxel_field_fwd_bwd_64x64x64(benchmark):
    """Voxel grid 64^3 field (grid_sample) at 262k points."""
    grid = VoxelGrid(VoxelConfig(resolution=64))
    points = _points()
    field_fwd_bwd(grid, points)
    benchmark.pedantic(field_fwd_bwd, (grid, points), rounds=10, iterations=1)
    assert grid.density.grad is not None


def test_hashgrid_fwd_bwd_64x64x64(benchmark):
    """Default hash grid (8 levels x 2, 2^15, 32-unit MLPs), 262k points, fwd + bwd."""
    model = HashGridNeRF(HashGridConfig(n_samples=SAMPLES), generator=torch.Generator())
    camera = _camera()
    fwd_bwd(model, camera)  # warm-up (allocator)
    benchmark.pedantic(fwd_bwd, (model, camera), rounds=5, iterations=1)
    assert model.encoding.params.grad is not None


def test_voxel_fwd_bwd_64x64x64(benchmark):
    """Voxel grid 64^3 via grid_sample, 262k points, fwd + bwd."""
    grid = VoxelGrid(VoxelConfig(resolution=64, n_samples=SAMPLES))
    camera = _camera()
    fwd_bwd(grid, camera)
    benchmark.pedantic(fwd_bwd, (grid, camera), rounds=10, iterations=1)
    assert grid.density.grad is not None


@pytest.mark.skipif(
    os.environ.get("STEINBENCH_PERF_COMPILE") != "1",
    reason="opt-in: torch.compile warm-up takes tens of seconds (STEINBENCH_PERF_COMPILE=1)",
)
def test_hashgrid_compile_vs_eager_ratio(benchmark):
    """extra_info['compile_over_eager'] = median compiled / median eager fwd+bwd (same run)."""
    camera = _camera()
    eager = HashGridNeRF(HashGridConfig(n_samples=SAMPLES), generator=torch.Generator())
    compiled = HashGridNeRF(
        HashGridConfig(n_samples=SAMPLES, compile=True), generator=torch.Generator()
    )
    start = time.perf_counter()
    fwd_bwd(compiled, camera)
    warmup = time.perf_counter() - start
    fwd_bwd(eager, camera)

    def median(model, n=5):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fwd_bwd(model, camera)
            times.append(time.perf_counter() - start)
        return sorted(times)[n // 2]

    t_eager, t_compiled = benchmark.pedantic(
        lambda: (median(eager), median(compiled)), rounds=1, iterations=1
    )
    benchmark.extra_info["compile_warmup_s"] = warmup
    benchmark.extra_info["eager_s"] = t_eager
    benchmark.extra_info["compiled_s"] = t_compiled
    benchmark.extra_info["compile_over_eager"] = t_compiled / t_eager
    torch.testing.assert_close(
        compiled.encoding.params.grad, eager.encoding.params.grad, atol=1e-4, rtol=1e-3
    )
