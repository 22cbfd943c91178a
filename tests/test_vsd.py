"""VSD: definition at init, eps_phi training, camera dropout rate, determinism, oracle == SDS."""

import math

import pytest
import torch

from backbones.voxel import VoxelConfig, VoxelGrid
from core.cameras import orbit_cameras
from core.schedule import add_noise, alpha_sigma
from core.weighting import timestep_weight
from estimators import SDS, EstimatorContext, GuidanceConfig, classifier_free_guidance
from estimators.eps_phi import VariationalScoreModel
from estimators.vsd import VSD, VSDConfig, build_residual_eps_phi
from tests.fakes import LinearPrior
from world.prior import mixture_posterior_mean


def _vsd(config: VSDConfig, seed: int = 0, shape=(3, 8, 8)) -> VSD:
    generator = torch.Generator().manual_seed(seed)
    return VSD(config, build_residual_eps_phi(config, shape, generator))


def _cameras(n: int):
    return orbit_cameras(n, (20.0,), 2.5, 40.0)


def _inputs(n: int = 3, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    eps = torch.randn(n, 3, size, size, generator=g)
    return x, eps


def _ctx(prompt: str, cameras, step: int = 0, seed: int = 0) -> EstimatorContext:
    generator = torch.Generator().manual_seed(seed)
    return EstimatorContext(prompt=prompt, cameras=cameras, step=step, generator=generator)


@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d"])
def test_vsd_at_init_is_guidance_only(weighting):
    """delta_psi = 0 at init: G = w (eps_hat - eps_c) = (s - 1) w (eps_c - eps_u), diffusers CFG.

    Tolerance: 1e-6 (float32 rounding of the two algebraically equal forms).
    """
    prior = LinearPrior()
    x, eps = _inputs()
    t = torch.tensor([25, 400, 950])
    s = 7.5
    vsd = _vsd(VSDConfig(cfg_mode="diffusers", guidance_scale=s, weighting=weighting))
    got, diagnostics = vsd.grad(x.requires_grad_(), t, eps, prior, _ctx("p", _cameras(3)))

    x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
    eps_c, eps_u = 0.3 * x_t + 0.1, -0.2 * x_t + 0.05
    eps_hat = classifier_free_guidance(eps_c, eps_u, s, "diffusers")
    w = timestep_weight(t, prior.alphas_cumprod, weighting).view(-1, 1, 1, 1)
    torch.testing.assert_close(got, w * (eps_hat - eps_c), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, (s - 1) * w * (eps_c - eps_u), rtol=1e-5, atol=1e-6)
    assert not got.requires_grad
    assert diagnostics["grad_norm"] > 0 and "phi_loss" not in diagnostics


def test_vsd_at_init_without_guidance_is_exactly_zero(world_prior_small):
    """With s = 1 (diffusers) eps_hat is eps_c and eps_phi = eps_c + 0: G == 0 exactly."""
    x, eps = _inputs(2, 16)
    t = torch.tensor([30, 700])
    vsd = _vsd(VSDConfig(guidance_scale=1.0), shape=(3, 16, 16))
    got, diagnostics = vsd.grad(x, t, eps, world_prior_small, _ctx("a snowman", _cameras(2)))
    assert torch.equal(got, torch.zeros_like(x))
    assert diagnostics["grad_norm"] == 0.0 and diagnostics["phi_residual_norm"] == 0.0


def test_vsd_counts_phi_evaluations_separately():
    """eps_phi's net is counted in n_evals_phi; the prior counts its own calls (with CFG,
    eps_phi's residual form needs one more conditional prior call)."""
    prior = LinearPrior()
    x, eps = _inputs(2)
    t = torch.tensor([100, 200])
    vsd = _vsd(VSDConfig(guidance_scale=1.0))
    vsd.grad(x, t, eps, prior, _ctx("p", _cameras(2)))
    assert (prior.n_evals, vsd.n_evals_phi) == (2, 2)
    vsd = _vsd(VSDConfig(guidance_scale=7.5))
    vsd.grad(x, t, eps, prior, _ctx("p", _cameras(2)))
    assert (prior.n_evals, vsd.n_evals_phi) == (2 + 6, 2)


def _reference_render(prior, prompt: str, index: int):
    """A fixed 'render': reference image ``index`` of ``prompt`` and its camera."""
    refs = prior.references[prompt].images
    image = refs[index].view(1, *prior.shape)
    return image, prior.reference_cameras[index]


def test_eps_phi_loss_decreases_on_a_fixed_render(world_prior_small):
    """200 updates on one fixed render (the voxel grid's initial blob, which no reference
    resembles) at one camera: the mean loss of the last 20 updates is below 0.1 x the mean of
    the first 20 (measured: 0.012 for seed 0, 0.015 for seed 1)."""
    prior = world_prior_small
    _, cameras = _reference_render(prior, "a snowman", 5)
    with torch.no_grad():
        blob = VoxelGrid(VoxelConfig(resolution=16)).render(cameras, 16, 16)["rgb"]
    x = prior.encode(blob)
    vsd = _vsd(VSDConfig(), shape=prior.shape)
    losses = []
    for step in range(200):
        vsd.update(x, prior, _ctx("a red sphere", cameras, step, seed=1000 + step))
        losses.append(vsd.last_loss)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.1 * first, (first, last)


class _RecordingModel(VariationalScoreModel):
    """Records the camera-dropout masks VSD.update passes to the loss."""

    def __init__(self) -> None:
        self.param = torch.nn.Parameter(torch.zeros(()))
        self.masks: list[torch.Tensor] = []

    def predict(self, x_t, t, ctx, prior, camera_dropped=None, eps_prior=None):
        return torch.zeros_like(x_t) + self.param

    def loss(self, x, t, eps, ctx, prior, camera_dropped):
        self.masks.append(camera_dropped.clone())
        return (self.param - 1.0) ** 2

    def parameters(self):
        return [self.param]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("rate", [0.1, 0.35])
def test_camera_dropout_rate(rate):
    """2000 per-image draws (400 steps x B = 5) from fixed-seed generators: the dropped count
    lies within 4 binomial standard errors of 2000 * rate."""
    prior = LinearPrior()
    model = _RecordingModel()
    vsd = VSD(VSDConfig(camera_dropout=rate), model)
    x = torch.zeros(5, 3, 4, 4)
    for step in range(400):
        vsd.update(x, prior, _ctx("p", _cameras(5), step, seed=step))
    dropped = torch.cat(model.masks)
    n = dropped.numel()
    assert n == 2000 and dropped.dtype == torch.bool
    se = math.sqrt(n * rate * (1 - rate))
    assert abs(int(dropped.sum()) - n * rate) <= 4 * se, int(dropped.sum())


@pytest.mark.parametrize("rate,expected", [(0.0, False), (1.0, True)])
def test_camera_dropout_extremes(rate, expected):
    model = _RecordingModel()
    vsd = VSD(VSDConfig(camera_dropout=rate), model)
    for step in range(20):
        vsd.update(torch.zeros(3, 3, 4, 4), LinearPrior(), _ctx("p", _cameras(3), step, step))
    assert bool((torch.cat(model.masks) == expected).all())


def test_dropped_camera_is_zero_condition(world_prior_small):
    """A dropped camera feeds zeros as delta_psi's camera condition (the prior keeps its
    view-dependent conditioning on the true camera); kept cameras feed the flattened c2w."""
    prior = world_prior_small
    vsd = _vsd(VSDConfig(), shape=prior.shape)
    seen = []
    forward = vsd.model.net.forward
    vsd.model.net.forward = lambda x_t, t, c2w, x0: seen.append(c2w) or forward(x_t, t, c2w, x0)
    x, eps = _inputs(2, 16)
    t = torch.tensor([300, 600])
    cameras = _cameras(2)
    x_t = add_noise(x, t, eps, prior.alphas_cumprod)
    vsd.model.predict(x_t, t, _ctx("a snowman", cameras), prior, torch.tensor([True, False]))
    assert torch.equal(seen[0][0], torch.zeros(16))
    assert torch.equal(seen[0][1], cameras.c2w[1].flatten())


def _train(seed: int, prior, x, cameras, n: int = 5) -> dict:
    vsd = _vsd(VSDConfig(), seed=seed, shape=prior.shape)
    for step in range(n):
        vsd.update(x, prior, _ctx("a snowman", cameras, step, seed=500 + step))
    return vsd.model.state_dict()["net"]


def test_same_seed_bit_identical_weights_and_seeds_differ(world_prior_small):
    prior = world_prior_small
    x, cameras = _reference_render(prior, "a snowman", 5)
    state = torch.get_rng_state()
    a = _train(0, prior, x, cameras)
    assert torch.equal(torch.get_rng_state(), state), "VSD must not touch the global RNG"
    b = _train(0, prior, x, cameras)
    c = _train(1, prior, x, cameras)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_state_dict_round_trip(world_prior_small):
    """Network, optimiser state and counters survive a save/load: the next update matches."""
    prior = world_prior_small
    x, cameras = _reference_render(prior, "a snowman", 2)
    a = _vsd(VSDConfig(), seed=0, shape=prior.shape)
    for step in range(3):
        a.update(x, prior, _ctx("a snowman", cameras, step, seed=step))
    b = _vsd(VSDConfig(), seed=7, shape=prior.shape)
    b.load_state_dict(a.state_dict())
    for est in (a, b):
        est.update(x, prior, _ctx("a snowman", cameras, 3, seed=3))
    sa, sb = a.model.state_dict()["net"], b.model.state_dict()["net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.last_loss == b.last_loss and a.n_updates == b.n_updates == 4


class _OracleEpsPhi(VariationalScoreModel):
    """The exact denoiser of a single particle: q(x | c) is a point mass at the render, so
    eps_phi(x_t) = (x_t - alpha E[x | x_t]) / sigma with the world's mixture posterior mean
    over one component (= the render)."""

    def __init__(self, render: torch.Tensor) -> None:
        self.render = render

    def predict(self, x_t, t, ctx, prior, camera_dropped=None, eps_prior=None):
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
        mean = torch.stack(
            [
                mixture_posterior_mean(
                    x_t[i : i + 1].flatten(1),
                    alpha[i : i + 1],
                    sigma[i : i + 1],
                    self.render[i : i + 1].flatten(1),
                    torch.zeros(1, 1),
                )[0]
                for i in range(x_t.shape[0])
            ]
        ).view_as(x_t)
        shape = (-1, 1, 1, 1)
        return (x_t - alpha.view(shape) * mean) / sigma.view(shape)

    def loss(self, x, t, eps, ctx, prior, camera_dropped):
        raise NotImplementedError

    def parameters(self):
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_oracle_eps_phi_makes_vsd_equal_sds(world_prior_small, scale):
    """Plumbing check: with the exact denoiser of the render, VSD's G equals SDS's G.

    Tolerance: atol 1e-4 on G (float32; (x_t - alpha x) / sigma recovers eps to ~1e-6 / sigma,
    times w(t) = sigma^2)."""
    prior = world_prior_small
    g = torch.Generator().manual_seed(4)
    x = prior.references["a snowman"].images[[1, 9, 12]].view(3, *prior.shape)
    x = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)  # not a reference
    eps = torch.randn(x.shape, generator=g)
    t = torch.tensor([20, 500, 979])
    cameras = prior.reference_cameras[[1, 9, 12]]
    ctx = _ctx("a snowman", cameras)
    guidance = GuidanceConfig(guidance_scale=scale)
    vsd = VSD(VSDConfig(guidance_scale=scale), _OracleEpsPhi(x))
    got, _ = vsd.grad(x, t, eps, prior, ctx)
    want, _ = SDS(guidance).grad(x, t, eps, prior, ctx)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert want.abs().max() > 1e-2  # the comparison is not between two zeros


def test_warmup_returns_zero_gradient():
    prior = LinearPrior()
    x, eps = _inputs(1)
    vsd = _vsd(VSDConfig(guidance_scale=7.5, warmup_steps=2))
    for step, nonzero in [(0, False), (1, False), (2, True)]:
        got, _ = vsd.grad(x, torch.tensor([500]), eps, prior, _ctx("p", _cameras(1), step))
        assert bool(got.abs().max() > 0) == nonzero


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"camera_dropout": 1.5},
        {"warmup_steps": -1},
        {"updates_per_step": 0},
        {"phi_timesteps": "small"},
        {"phi_loss_weighting": "snr"},
        {"phi_embed_dim": 7},
        {"t_min": 0.9, "t_max": 0.1},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        VSDConfig(**kwargs)


def test_run_config_has_vsd_section():
    from benchmark.run.config import load_config
    from core.errors import ConfigError

    config = load_config(None, ["vsd.camera_dropout=0.25", "vsd.phi_timesteps=guidance"])
    assert config.vsd.camera_dropout == 0.25 and config.vsd.phi_timesteps == "guidance"
    with pytest.raises(ConfigError, match="vsd"):
        load_config(None, ["vsd.phi_loss_weighting=bogus"])
