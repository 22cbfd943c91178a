"""Exact quality metrics (world/metrics.py), the reference gradient and the 2D world."""

import math

import numpy as np
import pytest
import torch

from core.cameras import look_at_origin, orbit_cameras
from world.metrics import (
    angular_distance,
    depth_l1,
    janus_score,
    l1_scale,
    mask_iou,
    nearest_azimuth,
    psnr,
    ssim,
)
from world.objects import Part, WorldObject, get_object
from world.renderer import render_object

C1, C2 = 0.01**2, 0.03**2


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Direct SSIM of two [C, H, W] images: explicit 11x11 gaussian (sigma 1.5) weights at
    every valid window position, statistics as weighted sums (float64 loops)."""
    k = np.arange(11) - 5.0
    g = np.exp(-(k**2) / (2 * 1.5**2))
    g /= g.sum()
    w2 = np.outer(g, g)
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                a, b = x[c, i : i + 11, j : j + 11], y[c, i : i + 11, j : j + 11]
                mx, my = (w2 * a).sum(), (w2 * b).sum()
                vx = (w2 * (a - mx) ** 2).sum()
                vy = (w2 * (b - my) ** 2).sum()
                cov = (w2 * (a - mx) * (b - my)).sum()
                values.append(
                    (2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
                )
    return float(np.mean(values))


@pytest.fixture(scope="module")
def truth():
    """True renders of two objects at two held-out views (16x16)."""
    cameras = look_at_origin(
        torch.tensor([20.0, 20.0]),
        torch.tensor([7.5, 187.5]),
        torch.tensor([2.5, 2.5]),
        torch.tensor([40.0, 40.0]),
    )
    out = [render_object(get_object(p), cameras, 16, 16) for p in ("a snowman", "a toy car")]
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}


def test_true_renders_score_perfectly_against_themselves(truth):
    torch.testing.assert_close(psnr(truth["rgb"], truth["rgb"]), torch.full((4,), 100.0))
    torch.testing.assert_close(ssim(truth["rgb"], truth["rgb"]), torch.ones(4))
    torch.testing.assert_close(mask_iou(truth["mask"], truth["mask"]), torch.ones(4))
    torch.testing.assert_close(
        depth_l1(truth["depth"], truth["depth"], truth["mask"]), torch.zeros(4)
    )
    # the depth error is scale-aligned: a depth map off by a factor 2.5 is still perfect
    torch.testing.assert_close(
        depth_l1(truth["depth"] / 2.5, truth["depth"], truth["mask"]),
        torch.zeros(4),
        rtol=0,
        atol=1e-6,
    )


def test_blank_render_gets_the_known_worst_values(truth):
    """Blank = white background, opacity 0, depth 0."""
    blank_rgb = torch.ones_like(truth["rgb"])
    mse = ((truth["rgb"] - 1.0) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(blank_rgb, truth["rgb"]), 10 * torch.log10(1 / mse))
    want_ssim = [ssim_reference(np.ones((3, 16, 16)), t.double().numpy()) for t in truth["rgb"]]
    torch.testing.assert_close(
        ssim(blank_rgb, truth["rgb"]), torch.tensor(want_ssim, dtype=torch.float32)
    )
    assert bool((ssim(blank_rgb, truth["rgb"]) < 0.5).all())
    torch.testing.assert_close(
        mask_iou(torch.zeros_like(truth["mask"]), truth["mask"]), torch.zeros(4)
    )
    # no depth at all: s = 0, the error is the mean true depth on the mask
    on = (truth["mask"] > 0.5).flatten(1).float()
    mean_depth = (truth["depth"].flatten(1) * on).sum(1) / on.sum(1)
    torch.testing.assert_close(
        depth_l1(torch.zeros_like(truth["depth"]), truth["depth"], truth["mask"]), mean_depth
    )


def test_ssim_matches_a_direct_implementation_and_constant_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 14, 13, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    want = [ssim_reference(a.numpy(), b.numpy()) for a, b in zip(x, y, strict=True)]
    torch.testing.assert_close(
        ssim(x, y), torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12
    )
    # two constant images a, b: (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.3, 0.8
    got = ssim(*(torch.full((1, 3, 12, 12), v, dtype=torch.float64) for v in (a, b)))
    want = torch.tensor([(2 * a * b + C1) / (a * a + b * b + C1)], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_l1_scale_is_the_l1_optimal_scale():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(3, 50, generator=g, dtype=torch.float64) + 0.1
    target = 1.7 * pred + 0.3 * torch.randn(3, 50, generator=g, dtype=torch.float64)
    weight = (torch.rand(3, 50, generator=g) > 0.3).double()
    s = l1_scale(pred, target, weight)
    grid = torch.linspace(0.0, 4.0, 40001, dtype=torch.float64)
    for row in range(3):
        cost = ((grid[:, None] * pred[row] - target[row]).abs() * weight[row]).sum(1)
        best = float(cost.min())
        got = float(((s[row] * pred[row] - target[row]).abs() * weight[row]).sum())
        assert got <= best + 1e-9, (got, best)


def test_mask_iou_counts_pixels():
    pred = torch.zeros(1, 1, 4, 4)
    true = torch.zeros(1, 1, 4, 4)
    pred[..., :2, :] = 0.9  # 8 pixels
    true[..., 1:3, :] = 0.7  # 8 pixels, 4 shared
    torch.testing.assert_close(mask_iou(pred, true), torch.tensor([4 / 12]))
    torch.testing.assert_close(mask_iou(true * 0, true * 0), torch.ones(1))  # both empty


def _two_faced(obj: WorldObject) -> WorldObject:
    """The object without its "back" part, united with a copy rotated 180 degrees about z:
    the front (face, eyes, nose, mouth) on both sides."""

    def rotated(sdf):
        return lambda p: sdf(p * torch.tensor([-1.0, -1.0, 1.0], dtype=p.dtype))

    front = tuple(part for part in obj.parts if part.name != "back")
    copies = tuple(Part(rotated(part.sdf), part.albedo, part.name) for part in front)
    return WorldObject("two-faced " + obj.prompt, front + copies, True)


@pytest.fixture(scope="module")
def janus_setup():
    """The mask's true renders at 24 azimuths (elevation 20, offset 7.5) at 24x24."""
    cameras = orbit_cameras(24, (20.0,), 2.5, 40.0, azimuth_offset=7.5)
    mask = get_object("a mask face")
    candidates = render_object(mask, cameras, 24, 24)["rgb"]
    back = angular_distance(cameras.azimuth, 180.0) < 60.0
    return mask, cameras, candidates, back.nonzero().squeeze(-1)


def test_janus_is_zero_for_the_true_object(janus_setup):
    mask, cameras, candidates, back = janus_setup
    assert len(back) == 8
    score, front = janus_score(candidates[back], cameras.azimuth[back], candidates, cameras.azimuth)
    assert float(score) == 0.0 and float(front) == 0.0
    # every view (not only the back ones) is its own nearest azimuth
    torch.testing.assert_close(
        nearest_azimuth(candidates, candidates, cameras.azimuth), cameras.azimuth
    )


def test_janus_is_high_for_a_two_faced_object(janus_setup):
    mask, cameras, candidates, back = janus_setup
    # the front's appearance at every back view: exactly 1
    opposite = (back + 12) % 24
    score, front = janus_score(
        candidates[opposite], cameras.azimuth[back], candidates, cameras.azimuth
    )
    assert float(score) == 1.0 and float(front) == 1.0
    # a two-faced mask (a face on both sides) whose second face carries the front's shading,
    # as distillation bakes it: the light turns with the copy (rotated 180 degrees about z)
    two_faced = _two_faced(mask)
    baked = render_object(two_faced, cameras[back], 24, 24, light_direction=(-0.4, -0.3, 0.85))
    score, front = janus_score(baked["rgb"], cameras.azimuth[back], candidates, cameras.azimuth)
    assert float(score) > 0.95 and float(front) == 1.0, (score, front)
    # lit physically, the back face is darker than any front view and RGB MSE flags only the
    # back views nearest the front's side (3 of 8): documented limitation (docs/world.md)
    lit = render_object(two_faced, cameras[back], 24, 24)["rgb"]
    score, front = janus_score(lit, cameras.azimuth[back], candidates, cameras.azimuth)
    assert float(score) > 0.25 and float(front) > 0.25, (score, front)


def test_janus_ignores_front_views(janus_setup):
    _, cameras, candidates, _ = janus_setup
    score, front = janus_score(candidates[:1], cameras.azimuth[:1], candidates, cameras.azimuth)
    assert math.isnan(float(score)) and math.isnan(float(front))


# --------------------------------------------------------------------------- the 2D world


def test_image_backbone_sds_improves_psnr(world_prior_small):
    """SDS on the image backbone, 100 steps at 16x16 on 'a red sphere' against the shared
    small prior (references at elevations 0 and 30): the held-out metric is the true render
    at the fixed camera. Measured: 6.5 -> 22.7 dB; required: +10 dB."""
    from benchmark.run.config import load_config
    from benchmark.run.trainer import CellTrainer, run_cell
    from evaluation.heldout import HeldOutEvaluator

    config = load_config(
        None,
        [
            "render.height=16",
            "render.width=16",
            "world.supersample=1",
            "image.elevation=0",
            "image.azimuth=0",
            "eval.every=50",
            "steps=100",
        ],
        backbone="image",
    )
    assert config.camera.elevation_range == (0.0, 0.0)  # the training camera is pinned
    assert config.camera.azimuth_range == (0.0, 0.0)
    device = torch.device("cpu")
    trainer = CellTrainer(config, "sds", "a red sphere", 0, world_prior_small, device)
    cameras, _ = trainer.sample_step_inputs(7)
    assert float(cameras.elevation[0]) == 0.0 and float(cameras.azimuth[0]) == 0.0
    evaluator = HeldOutEvaluator("a red sphere", config, device)
    assert len(evaluator.cameras) == 1

    result = run_cell(trainer, lambda backbone, step: evaluator(backbone)[0], lambda s, m: None)
    assert result.status == "ok" and result.steps_done == 100
    assert set(result.final) == {"psnr", "ssim", "detail", "chroma", "extreme"}  # no geometry
    assert result.final["psnr"] > result.initial["psnr"] + 10.0, (result.initial, result.final)
    assert result.final["ssim"] > result.initial["ssim"] + 0.5


def test_image_backbone_renders_one_image_for_every_camera():
    from backbones.image import ImageBackbone, ImageConfig

    backbone = ImageBackbone(ImageConfig(downsample=2), 8, 6)
    assert backbone.logits.shape == (1, 3, 4, 3)
    cameras = orbit_cameras(3, (0.0,), 2.5, 40.0)
    out = backbone.render(cameras, 8, 6, normals=True)
    assert out["rgb"].shape == (3, 3, 8, 6)
    torch.testing.assert_close(out["rgb"], torch.full((3, 3, 8, 6), 0.5))
    assert bool((out["depth"] == 0).all()) and bool((out["opacity"] == 1).all())
    assert out["normal"].shape == (3, 3, 8, 6)
    out["rgb"].sum().backward()
    assert backbone.logits.grad is not None


# ----------------------------------------------------------------- Janus, end to end


@pytest.mark.slow
def test_view_agnostic_prior_makes_a_two_faced_mask():
    """SDS on 'a mask face' (16x16, voxel 24^3, 200 steps, seed 0): the view-agnostic prior
    paints the face on the back, the view-aware one does not. Measured janus 0.08 (aware) vs
    0.71 (agnostic), janus_front 0 vs 1 (seed 1: 0.03 vs 0.71); required: a gap > 0.4.
    docs/world.md has the full-size experiment (32x32, 300 steps, 3 objects, 2 seeds)."""
    from dataclasses import replace

    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer, run_cell
    from evaluation.heldout import HeldOutEvaluator

    prompt, device = "a mask face", torch.device("cpu")
    config = load_config(
        None,
        [
            "render.height=16",
            "render.width=16",
            "world.n_azimuth=12",
            "world.elevations=[10,30]",
            "world.supersample=1",
            "voxel.resolution=24",
            "voxel.n_samples=32",
            "eval.every=200",
            "steps=200",
        ],
    )
    prior = build_prior(config, [prompt], device)
    evaluator = HeldOutEvaluator(prompt, config, device)
    final = {}
    for view_aware in (True, False):
        prior.config = replace(config.world, view_aware=view_aware)  # same references
        trainer = CellTrainer(config, "sds", prompt, 0, prior, device)
        result = run_cell(trainer, lambda b, s: evaluator(b)[0], lambda s, m: None)
        final[view_aware] = result.final
    aware, agnostic = final[True], final[False]
    assert agnostic["janus"] > aware["janus"] + 0.4, (aware, agnostic)
    assert aware["janus_front"] <= 0.25 and agnostic["janus_front"] >= 0.75, (aware, agnostic)
    assert aware["psnr"] > agnostic["psnr"]
