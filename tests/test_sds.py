"""SDS equals w(t) (eps_hat - eps) on fixed inputs, for both CFG modes and all weightings."""

import pytest
import torch

from core.schedule import add_noise
from core.weighting import timestep_weight
from estimators import SDS, EstimatorContext, GuidanceConfig, classifier_free_guidance
from tests.fakes import LinearPrior


@pytest.mark.parametrize(
    "mode,scale", [("diffusers", 1.0), ("diffusers", 7.5), ("dreamfusion", 100.0)]
)
@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d"])
def test_sds_matches_definition(mode, scale, weighting):
    prior = LinearPrior()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([25, 400, 950])
    ctx = EstimatorContext(prompt="p", cameras=None)
    guidance = GuidanceConfig(cfg_mode=mode, guidance_scale=scale, weighting=weighting)
    got, diagnostics = SDS(guidance).grad(x.requires_grad_(), t, eps, prior, ctx)

    x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
    eps_hat = classifier_free_guidance(0.3 * x_t + 0.1, -0.2 * x_t + 0.05, scale, mode)
    w = timestep_weight(t, prior.alphas_cumprod, weighting).view(-1, 1, 1, 1)
    torch.testing.assert_close(got, w * (eps_hat - eps), rtol=1e-6, atol=1e-6)
    assert not got.requires_grad
    assert diagnostics["grad_norm"] > 0


def test_sds_counts_network_evaluations():
    prior = LinearPrior()
    ctx = EstimatorContext(prompt="p", cameras=None)
    x, eps, t = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.tensor([100, 200])
    SDS(GuidanceConfig(guidance_scale=1.0)).grad(x, t, eps, prior, ctx)
    assert prior.n_evals == 2  # conditional only
    SDS(GuidanceConfig(guidance_scale=7.5)).grad(x, t, eps, prior, ctx)
    assert prior.n_evals == 2 + 4  # conditional + unconditional


def test_sds_target_trick_gives_G_on_x():
    """loss = 0.5 ||x - (x - G).detach()||^2 has gradient exactly G w.r.t. x."""
    prior = LinearPrior()
    x = (torch.rand(2, 3, 4, 4) * 2 - 1).requires_grad_()
    eps = torch.randn(2, 3, 4, 4)
    g, _ = SDS(GuidanceConfig()).grad(
        x, torch.tensor([300, 600]), eps, prior, EstimatorContext("p", None)
    )
    loss = 0.5 * ((x - (x - g).detach()) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(x.grad, g)
