"""Voxel-grid backbone: shapes, blob init, gradients, agreement with the exact renderer."""

import torch

from backbones.voxel import VoxelConfig, VoxelGrid
from core.cameras import orbit_cameras


def test_render_shapes_and_blob_init():
    grid = VoxelGrid(VoxelConfig(resolution=16, n_samples=32))
    cams = orbit_cameras(3, (20.0,), 2.5, 40.0)
    out = grid.render(cams, 12, 10)
    assert out["rgb"].shape == (3, 3, 12, 10)
    assert out["depth"].shape == out["opacity"].shape == (3, 1, 12, 10)
    # blob of radius blob_std=0.5 around the origin: opaque centre, transparent corners
    assert float(out["opacity"][:, 0, 6, 5].min()) > 0.95
    assert float(out["opacity"][:, 0, 0, 0].max()) < 0.01
    torch.testing.assert_close(out["rgb"][:, :, 0, 0], torch.ones(3, 3), atol=1e-2, rtol=0)
    # centre depth: the blob surface (where density saturates) lies in front of the origin
    assert 1.9 < float(out["depth"][0, 0, 6, 5]) < 2.5


def test_gradients_reach_all_parameter_groups():
    grid = VoxelGrid(VoxelConfig(resolution=8, n_samples=16))
    out = grid.render(orbit_cameras(2, (0.0,), 2.5, 40.0), 8, 8)
    out["rgb"].sum().backward()
    assert grid.density.grad.abs().sum() > 0 and grid.color.grad.abs().sum() > 0
    names = [g["name"] for g in grid.param_groups()]
    assert names == ["density", "color"]


def test_rays_missing_the_box_show_background():
    grid = VoxelGrid(VoxelConfig(resolution=8, n_samples=8, background=(0.2, 0.3, 0.4)))
    cams = orbit_cameras(1, (0.0,), 2.5, 120.0)  # wide fov: corners miss the unit box
    out = grid.render(cams, 16, 16)
    torch.testing.assert_close(out["rgb"][0, :, 0, 0], torch.tensor([0.2, 0.3, 0.4]))
    assert float(out["opacity"][0, 0, 0, 0]) == 0.0


def test_normals_of_the_blob_point_outward():
    """The init blob is radially symmetric: its rendered normal at the image centre faces
    the camera, and normals are unit length where the ray hits."""
    grid = VoxelGrid(VoxelConfig(resolution=24, n_samples=64))
    cams = orbit_cameras(2, (30.0,), 2.5, 40.0)
    out = grid.render(cams, 9, 9, normals=True)
    n = out["normal"][:, :, 4, 4]  # [B, 3]
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2), atol=1e-3, rtol=0)
    cos = (n * cams.view_direction).sum(dim=1)
    assert bool((cos > 0.95).all()), cos
