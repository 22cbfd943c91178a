"""Ground-truth world: procedural objects and the sphere-tracing renderer."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from core.cameras import look_at_origin, orbit_cameras
from world.objects import (
    OBJECTS,
    Part,
    WorldObject,
    get_object,
    known_prompts,
    sphere,
)
from world.renderer import render_object

REQUIRED_PROMPTS = [
    "a red sphere",
    "a blue cube",
    "a green torus",
    "a yellow cone",
    "a snowman",
    "a red mushroom",
    "a wooden table",
    "a chair",
    "a desk lamp",
    "a house with a red door",
    "a toy car",
    "a mask face",
]
DISTANCE = 2.5


def _cameras(azimuths: list[float], elevation: float = 15.0, fovy: float = 40.0):
    az = torch.tensor(azimuths, dtype=torch.float32)
    ones = torch.ones_like(az)
    return look_at_origin(ones * elevation, az, ones * DISTANCE, ones * fovy)


def _fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = (1.0 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)


def test_library_has_required_prompts():
    assert set(REQUIRED_PROMPTS) <= set(known_prompts())
    for prompt in REQUIRED_PROMPTS:
        obj = get_object(prompt)
        assert obj.prompt == prompt
        for part in obj.parts:
            assert all(0.0 <= c <= 1.0 for c in part.albedo)
            assert min(part.albedo) < 0.95, "no part may be (near) pure white"


@pytest.mark.parametrize("prompt", REQUIRED_PROMPTS)
def test_object_inside_ball_and_big_enough(prompt):
    obj = get_object(prompt)
    # Outside the ball of radius 0.85: strictly positive distance.
    shells = torch.cat([_fibonacci_sphere(4000) * r for r in (0.85, 0.9, 1.0)])
    assert obj.sdf(shells).min().item() > 0.0
    # Inside: extent at least ~0.5 and roughly centred.
    g = torch.linspace(-0.85, 0.85, 48)
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1).reshape(-1, 3)
    inside = grid[obj.sdf(grid) < 0]
    assert inside.shape[0] > 0
    assert inside.norm(dim=-1).max().item() > 0.45
    assert inside.mean(dim=0).norm().item() < 0.3


def test_sdf_and_albedo_picks_closest_part():
    obj = get_object("a snowman")
    points = torch.tensor([[0.0, 0.0, -0.45], [0.32, 0.0, 0.45]])  # bottom ball, carrot tip
    sdf, albedo = obj.sdf_and_albedo(points)
    assert torch.allclose(sdf, obj.sdf(points))
    assert sdf[0] < 0
    assert torch.allclose(albedo[0], torch.tensor(obj.parts[0].albedo))
    nose = next(p for p in obj.parts if p.name == "nose")
    assert torch.allclose(albedo[1], torch.tensor(nose.albedo))


@pytest.mark.parametrize("prompt", REQUIRED_PROMPTS)
def test_render_every_object(prompt):
    cams = orbit_cameras(4, (15.0,), DISTANCE, 40.0)
    out = render_object(get_object(prompt), cams, 32, 32)
    rgb, mask, depth, normal = out["rgb"], out["mask"], out["depth"], out["normal"]
    assert rgb.shape == (4, 3, 32, 32) and normal.shape == (4, 3, 32, 32)
    assert mask.shape == (4, 1, 32, 32) and depth.shape == (4, 1, 32, 32)
    for v in out.values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
    coverage = mask.mean(dim=(1, 2, 3))
    assert (coverage > 0.05).all() and (coverage < 0.8).all(), coverage
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    full = mask[:, 0] == 1.0
    assert full.any()
    norms = normal.norm(dim=1)[full]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    d = depth[:, 0][full]
    assert d.min() >= DISTANCE - 0.9 and d.max() <= DISTANCE + 0.9
    empty = mask[:, 0] == 0.0
    assert (depth[:, 0][empty] == 0).all() and (normal.permute(0, 2, 3, 1)[empty] == 0).all()
    assert torch.allclose(rgb.permute(0, 2, 3, 1)[empty], torch.ones(3))


def test_sphere_analytic_depth_normal_and_background():
    radius = 0.6
    obj = WorldObject(
        "test sphere", (Part(partial(sphere, center=(0.0, 0.0, 0.0), radius=radius), (1, 0, 0)),)
    )
    background = (0.2, 0.4, 0.6)
    cams = _cameras([0.0, 77.0, 200.0], elevation=25.0)
    size = 33  # odd: the centre pixel's ray passes through the origin
    out = render_object(obj, cams, size, size, background=background)
    c = size // 2
    assert torch.allclose(out["depth"][:, 0, c, c], torch.full((3,), DISTANCE - radius), atol=1e-2)
    assert torch.allclose(out["mask"][:, 0, c, c], torch.ones(3))
    # Centre normal points back at the camera.
    assert torch.allclose(out["normal"][:, :, c, c], cams.view_direction, atol=1e-2)
    # Corner pixels see only the background.
    for i, j in [(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)]:
        assert (out["mask"][:, 0, i, j] == 0).all()
        assert torch.allclose(out["rgb"][:, :, i, j], torch.tensor(background).expand(3, 3))
    # Silhouette: projected radius of a sphere, asin(r / d), against the mask area.
    half = math.tan(math.radians(20.0))
    expected = math.pi * math.tan(math.asin(radius / DISTANCE)) ** 2 / (2 * half) ** 2
    coverage = out["mask"].mean(dim=(1, 2, 3))
    assert torch.allclose(coverage, torch.full((3,), expected), rtol=0.05)


def test_render_is_deterministic():
    cams = orbit_cameras(3, (10.0, 40.0), DISTANCE, 40.0, azimuth_offset=17.0)
    obj = get_object("a toy car")
    a = render_object(obj, cams, 24, 20, supersample=3)
    b = render_object(obj, cams, 24, 20, supersample=3)
    for key in ("rgb", "mask", "depth", "normal"):
        assert a[key].shape[-2:] == (24, 20)
        assert torch.equal(a[key], b[key]), key


def test_chunking_does_not_change_result():
    cams = orbit_cameras(2, (20.0,), DISTANCE, 40.0)
    obj = get_object("a desk lamp")
    a = render_object(obj, cams, 16, 16)
    b = render_object(obj, cams, 16, 16, chunk_size=300)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("prompt", [p for p, o in OBJECTS.items() if o.has_distinct_front_back])
def test_distinct_front_back_objects_differ(prompt):
    rgb = render_object(get_object(prompt), _cameras([0.0, 180.0]), 32, 32)["rgb"]
    assert (rgb[0] - rgb[1]).abs().mean().item() > 0.02


@pytest.mark.parametrize("prompt", REQUIRED_PROMPTS)
def test_front_back_flag_under_x_symmetric_light(prompt):
    """With light straight from above, shading cannot tell +x from -x: only the geometry and
    albedo can, so the views from azimuth 0 and 180 differ iff the flag is set."""
    obj = get_object(prompt)
    rgb = render_object(obj, _cameras([0.0, 180.0]), 32, 32, light_direction=(0, 0, 1))["rgb"]
    difference = (rgb[0] - rgb[1]).abs().mean().item()
    if obj.has_distinct_front_back:
        assert difference > 2.5e-3
    else:
        assert difference < 1e-4


def test_required_distinct_flags():
    for prompt in ["a house with a red door", "a toy car", "a mask face"]:
        assert get_object(prompt).has_distinct_front_back
    for prompt in ["a red sphere", "a blue cube", "a green torus", "a yellow cone"]:
        assert not get_object(prompt).has_distinct_front_back


def test_sphere_same_silhouette_front_and_back():
    out = render_object(get_object("a red sphere"), _cameras([0.0, 180.0]), 32, 32)
    assert (out["mask"][0] - out["mask"][1]).abs().max().item() < 1e-6


def test_unknown_prompt_raises_key_error_listing_prompts():
    with pytest.raises(KeyError) as info:
        get_object("a purple elephant")
    message = str(info.value)
    assert "a purple elephant" in message
    for prompt in REQUIRED_PROMPTS:
        assert prompt in message
