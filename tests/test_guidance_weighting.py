"""CFG modes, w(t) options and timestep sampling equal their definitions."""

import pytest
import torch

from core.guidance import classifier_free_guidance, needs_unconditional
from core.schedule import add_noise, alpha_sigma, ddpm_alphas_cumprod
from core.timesteps import TimestepSchedule
from core.weighting import timestep_weight


def test_cfg_diffusers_formula():
    g = torch.Generator().manual_seed(0)
    ec, eu = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    out = classifier_free_guidance(ec, eu, 7.5, "diffusers")
    torch.testing.assert_close(out, eu + 7.5 * (ec - eu), rtol=0, atol=0)
    torch.testing.assert_close(classifier_free_guidance(ec, eu, 1.0, "diffusers"), ec)


def test_cfg_dreamfusion_formula():
    g = torch.Generator().manual_seed(1)
    ec, eu = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    out = classifier_free_guidance(ec, eu, 100.0, "dreamfusion")
    torch.testing.assert_close(out, ec + 100.0 * (ec - eu), rtol=0, atol=0)
    torch.testing.assert_close(classifier_free_guidance(ec, eu, 0.0, "dreamfusion"), ec)
    # the two conventions agree when s_diffusers = s_dreamfusion + 1
    torch.testing.assert_close(
        classifier_free_guidance(ec, eu, 8.5, "diffusers"),
        classifier_free_guidance(ec, eu, 7.5, "dreamfusion"),
    )


def test_cfg_unknown_mode():
    with pytest.raises(ValueError, match="cfg_mode"):
        classifier_free_guidance(torch.zeros(1), torch.zeros(1), 1.0, "bogus")


def test_needs_unconditional():
    assert not needs_unconditional(1.0, "diffusers")
    assert not needs_unconditional(0.0, "dreamfusion")
    assert needs_unconditional(7.5, "diffusers")
    assert needs_unconditional(1.0, "dreamfusion")


def test_schedule_is_stable_diffusion():
    abar = ddpm_alphas_cumprod()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - betas, 0).float()
    torch.testing.assert_close(abar, expected, rtol=1e-5, atol=1e-6)
    assert abar.shape == (1000,) and bool((abar[1:] < abar[:-1]).all())


def test_weightings():
    abar = ddpm_alphas_cumprod()
    t = torch.tensor([20, 500, 980])
    a = abar[t]
    torch.testing.assert_close(timestep_weight(t, abar, "sds"), 1 - a)
    torch.testing.assert_close(timestep_weight(t, abar, "uniform"), torch.ones(3))
    torch.testing.assert_close(timestep_weight(t, abar, "fantasia3d"), a.sqrt() * (1 - a))
    with pytest.raises(ValueError, match="weighting"):
        timestep_weight(t, abar, "nope")


def test_add_noise_definition():
    abar = ddpm_alphas_cumprod()
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 900])
    alpha, sigma = alpha_sigma(abar, t)
    expected = alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(add_noise(x, t, eps, abar), expected)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(2))


def test_timesteps_range_and_anneal():
    sched = TimestepSchedule(t_min=0.02, t_max=0.98)
    t = sched.sample(20000, 0, 1000, torch.Generator().manual_seed(0))
    assert int(t.min()) == 20 and int(t.max()) == 980  # inclusive bounds, all reached
    # uniform: every bin of 96 values gets ~1/10 of the mass (binomial sd ~ 0.002)
    hist = torch.histc(t.float(), bins=10, min=20, max=981) / t.numel()
    assert float((hist - 0.1).abs().max()) < 0.01
    annealed = TimestepSchedule(0.02, 0.98, t_max_final=0.5, anneal_steps=100)
    assert annealed.bounds(0, 1000) == (20, 980)
    assert annealed.bounds(50, 1000) == (20, 740)
    assert annealed.bounds(1000, 1000) == (20, 500)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear"])
@pytest.mark.parametrize(
    "n, start, end", [(1000, 0.00085, 0.012), (1000, 1e-4, 0.02), (50, 1e-3, 0.2)]
)
def test_schedule_equals_diffusers_ddpm_scheduler_bit_for_bit(kind, n, start, end):
    from diffusers import DDPMScheduler

    expected = DDPMScheduler(
        num_train_timesteps=n, beta_start=start, beta_end=end, beta_schedule=kind
    ).alphas_cumprod
    assert torch.equal(ddpm_alphas_cumprod(n, start, end, kind), expected.to(torch.float32))
