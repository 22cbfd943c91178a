"""Gaussian backbone: init, render outputs, densification topology and Adam state, state dicts
with a changing count, the trainer wiring, and an overfit to true renders (slow)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from backbones import gaussian_density as density
from backbones.gaussians import GaussianConfig, GaussianSplats, position_lr
from core.cameras import orbit_cameras

torch.set_num_threads(2)


def _model(**kw) -> GaussianSplats:
    return GaussianSplats(GaussianConfig(**kw), generator=torch.Generator().manual_seed(0))


def test_init_is_deterministic_and_inside_the_ball():
    a, b = _model(n_points=200), _model(n_points=200)
    for name in GaussianSplats.PARAMS:
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert float(a.means.detach().norm(dim=1).max()) <= 0.5 + 1e-6
    blob = _model(n_points=200, init="blob")
    torch.testing.assert_close(blob.means.norm(dim=1), torch.full((200,), 0.5))
    torch.testing.assert_close(torch.sigmoid(a.opacity_logits), torch.full((200,), 0.1))


def test_knn_scale_matches_its_definition():
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [10.0, 0, 0]])
    d = torch.cdist(pts, pts).square() + torch.diag(torch.full((5,), math.inf))
    expected = d.topk(3, dim=1, largest=False).values.mean(1).sqrt()
    torch.testing.assert_close(density.knn_scale(pts, chunk=2), expected)


def test_render_outputs_and_blob_conventions():
    model = _model(n_points=600, init_opacity=0.3)
    cams = orbit_cameras(2, (30.0,), 2.5, 40.0)
    out = model.render(cams, 16, 16, normals=True)
    assert out["rgb"].shape == out["normal"].shape == (2, 3, 16, 16)
    assert out["depth"].shape == out["opacity"].shape == (2, 1, 16, 16)
    assert float(out["opacity"][:, 0, 8, 8].min()) > 0.95
    assert float(out["opacity"][:, 0, 0, 0].max()) == 0.0
    torch.testing.assert_close(out["rgb"][:, :, 0, 0], torch.ones(2, 3))  # white background
    # a ball of radius 0.5 seen from 2.5: the surface lies at ray distance ~2.0
    assert 1.9 < float(out["depth"][0, 0, 8, 8]) < 2.3
    n = out["normal"][:, :, 8, 8]
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2), atol=1e-4, rtol=0)
    assert bool(((n * cams.view_direction).sum(1) > 0.9).all())
    axis = _model(n_points=600, normals="shortest_axis").render(cams, 8, 8, normals=True)
    assert bool(((axis["normal"][:, :, 4, 4] * cams.view_direction).sum(1) >= 0).all())


def test_gradients_reach_every_group():
    model = _model(n_points=300, sh_degree=1)
    # isotropic init scales make the rotation's gradient exactly 0 (as in 3DGS): break them
    model.log_scales.data += torch.tensor([0.3, 0.0, -0.3])
    model.render(orbit_cameras(2, (10.0,), 2.5, 40.0), 12, 12)["rgb"].square().sum().backward()
    for group in model.param_groups():
        if group["name"] != "color_rest" or model.config.sh_degree == 1:
            assert group["params"][0].grad.abs().sum() > 0, group["name"]


def test_position_lr_decays_log_linearly():
    c = GaussianConfig(lr_position=1e-3, lr_position_final=1e-5, lr_position_steps=100)
    assert position_lr(c, 0) == pytest.approx(1e-3)
    assert position_lr(c, 50) == pytest.approx(1e-4)
    assert position_lr(c, 100) == position_lr(c, 500) == pytest.approx(1e-5)


def test_topology_composition_equals_sequential_application():
    g = torch.Generator().manual_seed(1)
    old, fresh_a, fresh_b = torch.randn(6, 2, generator=g), torch.randn(3, 2), torch.randn(2, 2)
    a = density.Topology(torch.tensor([0, 2, 6, 3, 7, 8, 5]), 6, 3)
    b = density.Topology(torch.tensor([1, 8, 0, 7, 3]), 7, 2)
    first = torch.cat([old, fresh_a])[a.source]
    seq = torch.cat([first, fresh_b])[b.source]
    both = a.then(b)
    torch.testing.assert_close(torch.cat([old, fresh_a, fresh_b])[both.source], seq)


def _train_step(model: GaussianSplats, opt, state: dict, k: int, cams, size: int = 16, loss=None):
    """One training step through the strategy calls (backbones/base.py), as the trainer."""
    state = model.step_pre_render(opt, state, k)
    info: dict = {}
    rgb = model.render(cams, size, size, info=info)["rgb"]
    state = model.step_pre_backward(opt, state, k, info)
    opt.zero_grad(set_to_none=True)
    (rgb.mean() if loss is None else loss(rgb)).backward()
    state = model.step_post_backward(opt, state, k, info)
    opt.step()
    return state


def _trained(model: GaussianSplats, steps: int = 3):
    opt = torch.optim.Adam(model.param_groups(), eps=1e-15)
    cams = orbit_cameras(2, (20.0,), 2.5, 40.0)
    state = model.initialize_state()
    for k in range(steps):
        state = _train_step(model, opt, state, k, cams)
    assert state == model.initialize_state()  # nothing carried between two steps
    return opt


def test_view_space_gradient_statistics_match_autograd():
    model = _model(n_points=100)
    cams = orbit_cameras(2, (20.0,), 2.5, 40.0)
    opt = torch.optim.Adam(model.param_groups(), eps=1e-15)
    state = model.step_pre_render(opt, model.initialize_state(), 0)
    info: dict = {}
    rgb = model.render(cams, 16, 16, info=info)["rgb"]
    state = model.step_pre_backward(opt, state, 0, info)
    assert state["record"]
    rgb.mean().backward()
    state = model.step_post_backward(opt, state, 0, info)
    # the reference: d L / d means2d from a second, plain render's autograd
    check: dict = {}
    out = model.render(cams, 16, 16, info=check)["rgb"].mean()
    (grad,) = torch.autograd.grad(out, check["means2d"])
    scale = torch.tensor([8.0 * 2, 8.0 * 2])
    norm = (grad * scale).norm(dim=-1)
    visible = check["radii"] > 0
    torch.testing.assert_close(model.grad_accum, (norm * visible).sum(0))
    torch.testing.assert_close(model.grad_count, visible.sum(0).float())
    # a render outside the strategy calls (evaluation, probe) records nothing
    model.render(cams, 16, 16)["rgb"].mean().backward()
    torch.testing.assert_close(model.grad_count, visible.sum(0).float())
    assert state == model.initialize_state()


def test_densify_clone_split_prune_and_adam_state():
    model = _model(
        n_points=50, densify_from=3, densify_every=3, densify_grad_threshold=0.0,
        percent_dense=0.015, min_opacity=0.0999,
    )  # fmt: skip
    opt = _trained(model, steps=3)
    model.log_scales.data[:25] = math.log(0.02)  # clone these (<= 0.015 x extent 4)
    model.log_scales.data[25:] = math.log(0.2)  # split these
    scales = model.log_scales.detach().exp().amax(dim=1)
    big = scales > 0.015 * 4.0
    opacity = torch.sigmoid(model.opacity_logits.detach())
    before = {n: getattr(model, n).detach().clone() for n in model.PARAMS}
    state = {n: opt.state[getattr(model, n)]["exp_avg"].clone() for n in model.PARAMS}
    n_big, n_small = int(big.sum()), int((~big).sum())
    assert n_big > 0 and n_small > 0
    changes = []
    scheduled = density.scheduled_update

    def spy(module, step):
        changes.append(scheduled(module, step))
        return changes[-1]

    density.scheduled_update = spy
    try:
        model.step_pre_render(opt, model.initialize_state(), 3)
    finally:
        density.scheduled_update = scheduled
    (topo,) = changes
    # every Gaussian was selected: small ones cloned, big ones split into 2; then pruned
    assert topo.n_fresh == n_small + 2 * n_big
    kept_old = (opacity >= 0.0999) & ~big  # split parents are removed, low opacity pruned
    assert int((topo.source < topo.n_old).sum()) == int(kept_old.sum())
    assert model.n_gaussians == len(topo.source)
    src = topo.source
    for name in model.PARAMS:
        p = getattr(model, name)
        assert opt.state[p]["exp_avg"].shape == p.shape
        old_rows = src < topo.n_old
        # kept Gaussians keep their values and moments, fresh ones start at zero moments
        torch.testing.assert_close(p.detach()[old_rows], before[name][src[old_rows]])
        torch.testing.assert_close(opt.state[p]["exp_avg"][old_rows], state[name][src[old_rows]])
        assert bool((opt.state[p]["exp_avg"][~old_rows] == 0).all())
    # split children: scale / 1.6 of a split parent
    assert model.grad_accum.shape == (model.n_gaussians,) and float(model.grad_accum.sum()) == 0
    opt.zero_grad(set_to_none=True)
    model.render(orbit_cameras(1, (0.0,), 2.5, 40.0), 16, 16)["rgb"].mean().backward()
    opt.step()  # Adam runs on the new count


def test_split_children_follow_the_parent():
    model = _model(n_points=1, densify_from=1, densify_every=1, densify_grad_threshold=0.0)
    model.log_scales.data[:] = torch.log(torch.tensor([0.3, 0.1, 0.05]))
    fresh_topo, fresh = density.densify_and_prune(model, 1)
    assert len(fresh["means"]) == 2 and fresh_topo.n_fresh == 2
    torch.testing.assert_close(
        fresh["log_scales"], torch.log(torch.tensor([[0.3, 0.1, 0.05]]) / 1.6).expand(2, 3)
    )
    assert list(fresh_topo.source) == [1, 2]  # the parent is removed


def test_opacity_reset_caps_opacity_and_zeroes_its_moments():
    model = _model(n_points=30, densify_every=0, opacity_reset_every=2, init_opacity=0.5)
    opt = _trained(model, steps=2)
    model.step_pre_render(opt, model.initialize_state(), 2)
    assert float(torch.sigmoid(model.opacity_logits).max()) <= 0.01 + 1e-6
    assert float(opt.state[model.opacity_logits]["exp_avg"].abs().sum()) == 0.0
    assert float(opt.state[model.means]["exp_avg"].abs().sum()) > 0.0


def test_state_dict_round_trip_with_a_changed_count():
    """A fresh model (initial count) loads a densified state: every tensor resized and equal,
    the same render, and Adam (loaded after it) steps on the new count. Bit-identical
    continuation through the CLI is tests/test_gaussians_resume.py."""
    cfg = dict(n_points=40, densify_from=2, densify_every=2, densify_grad_threshold=0.0)
    model = _model(**cfg)
    opt = _trained(model, steps=3)  # densified at step 2
    assert model.n_gaussians != 40
    saved = copy.deepcopy({"m": model.state_dict(), "o": opt.state_dict()})
    fresh = _model(**cfg)
    fresh_opt = torch.optim.Adam(fresh.param_groups(), eps=1e-15)
    fresh.load_state_dict(saved["m"])
    fresh_opt.load_state_dict(saved["o"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], fresh_opt.state[q][key])
    cams = orbit_cameras(2, (20.0,), 2.5, 40.0)
    with torch.no_grad():
        assert torch.equal(model.render(cams, 16, 16)["rgb"], fresh.render(cams, 16, 16)["rgb"])
    _train_step(fresh, fresh_opt, fresh.initialize_state(), 3, cams)


def test_run_config_builds_the_gaussian_backbone_and_steps():
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer

    config = load_config(
        None,
        ["render.height=16", "render.width=16", "gaussians.n_points=200",
         "gaussians.densify_from=2", "gaussians.densify_every=2",
         "gaussians.densify_grad_threshold=0.0"],
        backbone="gaussians",
    )  # fmt: skip
    prior = build_prior(config, ["a red sphere"], torch.device("cpu"))
    trainer = CellTrainer(config, "sds", "a red sphere", 0, prior, torch.device("cpu"))
    for k in range(4):
        trainer.step(k)
    assert trainer.backbone.n_gaussians > 200


@pytest.mark.slow
def test_overfit_to_true_renders_reaches_25_db_held_out():
    """A direct photometric fit (MSE on true renders of the snowman from training cameras)
    reaches >= 25 dB PSNR on the held-out ring."""
    from core.cameras import CameraConfig
    from world.objects import get_object
    from world.renderer import render_object

    torch.manual_seed(0)
    obj = get_object("a snowman")
    model = _model(n_points=1000, densify_from=100, densify_every=100, densify_until=400,
                   densify_grad_threshold=0.002)  # fmt: skip
    opt = torch.optim.Adam(model.param_groups(), eps=1e-15)
    gen = torch.Generator().manual_seed(0)
    state = model.initialize_state()
    for k in range(400):
        cams = CameraConfig(batch_size=2).sample(2, gen)
        target = render_object(obj, cams, 32, 32)["rgb"]

        def loss(rgb, target=target):
            return ((rgb - target) ** 2).mean()

        state = _train_step(model, opt, state, k, cams, 32, loss)
    ring = orbit_cameras(8, (20.0,), 2.5, 40.0, azimuth_offset=7.5)
    with torch.no_grad():
        mse = (
            (model.render(ring, 32, 32)["rgb"] - render_object(obj, ring, 32, 32)["rgb"]) ** 2
        ).mean()
    psnr = float(-10 * torch.log10(mse))
    print(f"overfit held-out PSNR {psnr:.2f} dB with {model.n_gaussians} Gaussians")
    assert psnr >= 25.0
