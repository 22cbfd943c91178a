"""SSD: equals SDS for phi = 1, mu = 1; unbiased with online mu; peeking mu is caught;
the Bayes depth estimator; mu strategies."""

from dataclasses import fields

import pytest
import torch

from core.cameras import orbit_cameras
from core.interfaces import PriorContext
from core.schedule import alpha_sigma
from estimators import SDS, EstimatorContext, GuidanceConfig
from estimators.control_coefficient import ControlCoefficient
from estimators.ssd import SSD, SSDConfig
from tests.fakes import LinearPrior
from world.geometry import WorldBayesGeometry
from world.prior import mixture_expectation


def _sds_twin(cfg: SSDConfig) -> SDS:
    """SDS with SSD's guidance, weighting and timestep settings (its config's shared part)."""
    return SDS(GuidanceConfig(**{f.name: getattr(cfg, f.name) for f in fields(GuidanceConfig)}))


def _draws(n_draws: int, n: int = 2, size: int = 8, seed: int = 3):
    """(x, t, eps, ctx) of ``n_draws`` training steps: renders in [-1, 1] [n, 3, size, size],
    t in [20, 980], eps, and a context with 2 orbit cameras at step k."""
    g = torch.Generator().manual_seed(seed)
    cameras = orbit_cameras(n, (20.0,), 2.5, 40.0)
    for k in range(n_draws):
        x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        t = torch.randint(20, 981, (n,), generator=g)
        eps = torch.randn(n, 3, size, size, generator=g)
        yield x, t, eps, EstimatorContext("a snowman", cameras, step=k)


@pytest.mark.parametrize("scale", [1.0, 7.5])
@pytest.mark.parametrize(
    "form",
    [
        {"form": "offset", "mu": "fixed", "mu_init": 1.0},  # phi = 1, mu = 1: S = eps
        {"form": "additive", "mu": "learned"},  # phi_b = 0: S = 0 whatever mu learns
    ],
    ids=["offset-phi1-mu1", "additive-constant"],
)
def test_ssd_constant_phi_is_sds_bit_for_bit(form, scale):
    """SSD with the constant baseline == SDS, bit for bit, on 6 draws with SSD's update (mu's
    fit) between them (the linear fake prior, with and without CFG)."""
    prior = LinearPrior()
    cfg = SSDConfig(baseline="constant", guidance_scale=scale, **form)
    ssd, sds = SSD(cfg), _sds_twin(cfg)
    for x, t, eps, ctx in _draws(6):
        out = ssd.grad(x, t, eps, prior, ctx)
        assert torch.equal(out.grad, sds.grad(x, t, eps, prior, ctx).grad)
        ssd.update(x, prior, ctx, out)


def _mean_difference_z(prior, cfg: SSDConfig, peek: bool, n_chunks=100, chunk=20):
    """z-scores (per channel) of mean(G_ssd - G_sds) over n_chunks * chunk eps draws at a
    fixed render x and t; G_sds estimates w E[eps_hat], so the mean difference is the bias."""
    geometry = WorldBayesGeometry(prior)
    refs = prior.references["a snowman"]
    x = (refs.images[2].view(1, 3, 16, 16) * 0.7).expand(chunk, -1, -1, -1)
    depth = refs.depth[2].view(1, 1, 16, 16).expand(chunk, -1, -1, -1) + 0.1
    t = torch.full((chunk,), 500)
    ctx = EstimatorContext(
        "a snowman", prior.reference_cameras[[2] * chunk], render={"depth": depth}
    )
    ssd, sds = SSD(cfg, geometry), SDS(GuidanceConfig())
    gen = torch.Generator().manual_seed(5)
    diffs = []
    for _ in range(n_chunks):
        eps = torch.randn(x.shape, generator=gen)
        if peek:  # deliberately biased: mu is fitted to the current sample before it is used
            ssd.update(x, prior, ctx, ssd.grad(x, t, eps, prior, ctx))
        out = ssd.grad(x, t, eps, prior, ctx)
        g_ssd = out.grad
        ssd.update(x, prior, ctx, out)
        g_sds, _ = sds.grad(x, t, eps, prior, ctx)
        diffs.append((g_ssd - g_sds).double().mean(dim=(2, 3)))  # [chunk, 3]
    d = torch.cat(diffs)
    return d.mean(0) / (d.std(0) / d.shape[0] ** 0.5)


@pytest.mark.parametrize(
    "cfg",
    [
        SSDConfig(form="offset", mu="learned", mu_shape="channel", mu_lr=0.05),
        SSDConfig(form="offset", mu="optimal", mu_shape="pixel", mu_ema=0.0),
        SSDConfig(form="additive", mu="optimal", mu_shape="pixel", mu_ema=0.0),
        SSDConfig(form="paper", mu="learned", mu_shape="scalar", mu_lr=0.05),
    ],
    ids=["offset-learned-channel", "offset-optimal-pixel", "additive-optimal", "paper-learned"],
)
def test_ssd_online_mu_is_unbiased(world_prior_small, cfg):
    """mean(G_ssd - G_sds) = 0 within 4 SE per channel over 2000 draws when mu at each step
    comes from earlier samples only."""
    z = _mean_difference_z(world_prior_small, cfg, peek=False)
    assert bool((z.abs() < 4.0).all()), z.tolist()


def test_peeking_mu_is_detected_as_biased(world_prior_small):
    """The same test fails for a mu fitted (least squares, per pixel) to the current sample."""
    cfg = SSDConfig(form="offset", mu="optimal", mu_shape="pixel", mu_ema=0.0)
    z = _mean_difference_z(world_prior_small, cfg, peek=True)
    assert bool((z.abs() > 4.0).any()), z.tolist()


def test_bayes_depth_recovers_reference_depth(world_prior_small):
    prior = world_prior_small
    refs = prior.references["a snowman"]
    i = 9
    t = torch.tensor([3])
    alpha, _ = alpha_sigma(prior.alphas_cumprod, t)
    x_t = alpha * refs.images[i].view(1, 3, 16, 16)
    ctx = PriorContext("a snowman", prior.reference_cameras[i])
    depth = WorldBayesGeometry(prior).depth(x_t, t, ctx)
    torch.testing.assert_close(depth.flatten(), refs.depth[i], rtol=0, atol=1e-4)
    normal = WorldBayesGeometry(prior).normal(x_t, t, ctx)
    mask = refs.depth[i] > 0
    torch.testing.assert_close(
        normal.flatten(2)[0][:, mask], refs.normal[i].view(3, -1)[:, mask], rtol=0, atol=1e-3
    )


def test_bayes_expectation_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(5, 6, generator=g, dtype=torch.float64) * 2 - 1
    values = torch.rand(5, 4, generator=g, dtype=torch.float64)
    log_prior = torch.randn(2, 5, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.8, 0.5], dtype=torch.float64)
    sigma = (1 - alpha**2).sqrt()
    x_t = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: mixture_expectation(z, alpha, sigma, refs, log_prior, values, 0.0, 2), (x_t,)
    )


@pytest.mark.parametrize(
    "shape,expected", [("scalar", (1, 1, 1, 1)), ("channel", (1, 3, 1, 1)), ("pixel", (1, 3, 4, 4))]
)
def test_mu_shapes(shape, expected):
    mu = ControlCoefficient("fixed", shape, init=0.5)
    value = mu.value(torch.zeros(2, 3, 4, 4))
    assert value.shape == expected and bool((value == 0.5).all())


def test_optimal_mu_is_least_squares_of_past_samples():
    g = torch.Generator().manual_seed(0)
    mu = ControlCoefficient("optimal", "channel", init=1.0, ema=0.5)
    s1, s2 = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    a1, a2 = 0.3 * s1 + 0.1 * torch.randn(2, 3, 4, 4, generator=g), 0.3 * s2
    assert bool((mu.value(s1) == 1.0).all())  # nothing observed yet
    mu.observe(a1, s1)
    mu.observe(a2, s2)
    dims = (0, 2, 3)
    num = 0.5 * (a1 * s1).sum(dims) + 0.5 * (a2 * s2).sum(dims)
    den = 0.5 * (s1 * s1).sum(dims) + 0.5 * (s2 * s2).sum(dims)
    torch.testing.assert_close(mu.value(s1).flatten(), num / den)


def test_learned_mu_reduces_squared_gradient():
    g = torch.Generator().manual_seed(0)
    mu = ControlCoefficient("learned", "scalar", init=0.0, lr=0.05)
    losses = []
    for _ in range(200):
        s = torch.randn(1, 3, 4, 4, generator=g)
        a = 0.7 * s + 0.2 * torch.randn(1, 3, 4, 4, generator=g)
        losses.append(float(((a - mu.value(s) * s) ** 2).sum()))
        mu.observe(a, s)
    assert abs(float(mu.value(s)) - 0.7) < 0.1
    assert sum(losses[-20:]) < 0.3 * sum(losses[:20])


def test_ssd_uses_mu_from_past_samples_only():
    prior = LinearPrior()
    cfg = SSDConfig(form="offset", baseline="constant", mu="learned", mu_lr=0.5)
    ssd = SSD(cfg)
    ctx = EstimatorContext("p", None)
    x, t = torch.zeros(1, 3, 4, 4), torch.tensor([400])
    eps = torch.randn(1, 3, 4, 4)
    out = ssd.grad(x, t, eps, prior, ctx)
    assert out.diagnostics["mu_mean"] == 1.0  # initial value, not yet fitted to this sample
    ssd.update(x, prior, ctx, out)
    _, d2 = ssd.grad(x, t, eps, prior, ctx)
    assert d2["mu_mean"] != 1.0
