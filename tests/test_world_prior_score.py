"""The world prior's noise prediction is the exact score of its Gaussian mixture.

    eps*(x_t) = -sigma_t grad_x log p_t(x_t | y)        (Tweedie; any tau)
    log p_t(x | y) = logsumexp_i [log pi_i - ||x - alpha x_i||^2 / (2 s^2)] - D/2 log(2 pi s^2)

checked by autograd in float64 for both view modes, CFG off; plus the two limits of the
posterior mean E[x_0 | x_t]: the nearest reference at tiny t and the (pi-weighted) mean of
the references at large t.
"""

import math
from dataclasses import replace

import pytest
import torch

from core.cameras import look_at_origin
from core.interfaces import PriorContext
from core.schedule import alpha_sigma
from world.prior import ReferenceSet, WorldPrior, WorldPriorConfig

PROMPT = "a toy car"
H = W = 8


@pytest.fixture(scope="module")
def prior64():
    """An 8x8 prior (8 azimuths x 2 elevations) whose references are float64."""
    config = WorldPriorConfig(n_azimuth=8, elevations=(0.0, 30.0), supersample=1)
    prior = WorldPrior([PROMPT], H, W, 2.5, 40.0, config=config)
    refs = prior.references[PROMPT]
    prior.references[PROMPT] = ReferenceSet(
        refs.images.double(), refs.directions.double(), refs.depth, refs.normal
    )
    return prior


def _cameras():
    """Two cameras between the reference views."""
    return look_at_origin(
        torch.tensor([12.0, 40.0]),
        torch.tensor([25.0, -130.0]),
        torch.tensor([2.5, 2.5]),
        torch.tensor([40.0, 40.0]),
    )


def _log_pi(prior, cameras):
    """Normalised log mixture weights [B, N] of the conditional branch, float64."""
    refs = prior.references[PROMPT]
    if prior.config.view_aware:
        logits = cameras.view_direction.double() @ refs.directions.T / prior.config.view_temperature
    else:
        logits = torch.zeros(len(cameras), refs.images.shape[0], dtype=torch.float64)
    return torch.log_softmax(logits, dim=1)


def mixture_log_density(x, alpha, sigma, refs, log_pi, tau):
    """log p_t(x | y) per row: x [B, D], alpha/sigma [B], refs [N, D], log_pi [B, N]."""
    s2 = sigma**2 + alpha**2 * tau**2
    d = x.shape[1]
    dist2 = ((x[:, None, :] - alpha[:, None, None] * refs[None]) ** 2).sum(-1)  # [B, N]
    return torch.logsumexp(log_pi - dist2 / (2 * s2[:, None]), dim=1) - 0.5 * d * torch.log(
        2 * math.pi * s2
    )


@pytest.mark.parametrize("view_aware", [True, False])
@pytest.mark.parametrize("tau", [0.0, 0.2])
def test_noise_prediction_is_minus_sigma_times_score(prior64, monkeypatch, view_aware, tau):
    prior = prior64
    monkeypatch.setattr(prior, "config", replace(prior.config, view_aware=view_aware, tau=tau))
    refs = prior.references[PROMPT].images
    cameras = _cameras()
    g = torch.Generator().manual_seed(0)
    for t_value in (1, 50, 300, 700, 999):
        t = torch.tensor([t_value, t_value])
        alpha, sigma = (v.double() for v in alpha_sigma(prior.alphas_cumprod, t))
        # one x_t near a reference (peaked posterior), one far from all (spread posterior)
        x0 = torch.stack([refs[3], torch.rand(refs.shape[1], generator=g, dtype=torch.float64)])
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_t = (alpha[:, None] * x0 + sigma[:, None] * noise).requires_grad_(True)

        log_p = mixture_log_density(x_t, alpha, sigma, refs, _log_pi(prior, cameras), tau)
        (score,) = torch.autograd.grad(log_p.sum(), x_t)
        want = -sigma[:, None] * score

        ctx = PriorContext(PROMPT, cameras)
        got = prior.predict_noise(x_t.detach().view(2, 3, H, W), t, ctx, 1.0, "diffusers")
        assert got.dtype == torch.float64
        # float64 throughout: agreement to ~1e-12; 1e-8 leaves room for summation order
        torch.testing.assert_close(got.flatten(1), want, rtol=1e-8, atol=1e-8)


def test_cfg_off_is_the_conditional_branch(prior64):
    """guidance 1 (diffusers form) and 0 (dreamfusion form) are exactly the conditional eps."""
    cameras = _cameras()
    x_t = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([400, 400])
    ctx = PriorContext(PROMPT, cameras)
    cond = prior64.predict_branch(x_t, t, ctx, conditional=True)
    for scale, mode in ((1.0, "diffusers"), (0.0, "dreamfusion")):
        torch.testing.assert_close(prior64.predict_noise(x_t, t, ctx, scale, mode), cond)


@pytest.mark.parametrize("view_aware", [True, False])
def test_tiny_t_denoises_to_the_nearest_reference(prior64, monkeypatch, view_aware):
    prior = prior64
    monkeypatch.setattr(prior, "config", replace(prior.config, view_aware=view_aware))
    refs = prior.references[PROMPT].images
    cameras = _cameras()[:1]
    t = torch.tensor([1])
    alpha, sigma = (v.double() for v in alpha_sigma(prior.alphas_cumprod, t))
    g = torch.Generator().manual_seed(2)
    ctx = PriorContext(PROMPT, cameras)
    for j in (0, 5, 11):
        x_t = alpha * refs[j] + sigma * torch.randn(refs.shape[1], generator=g, dtype=torch.float64)
        x0 = prior.posterior_mean(x_t.view(1, 3, H, W), t, ctx, conditional=True)
        torch.testing.assert_close(x0.flatten(), refs[j], rtol=0, atol=1e-9)
    if not view_aware:
        # an arbitrary x_t: the reference nearest to x_t / alpha
        x_t = torch.rand(refs.shape[1], generator=g, dtype=torch.float64) * 2 - 1
        nearest = ((x_t - alpha * refs) ** 2).sum(1).argmin()
        x0 = prior.posterior_mean(x_t.view(1, 3, H, W), t, ctx, conditional=True)
        torch.testing.assert_close(x0.flatten(), refs[nearest], rtol=0, atol=1e-9)


@pytest.mark.parametrize("view_aware", [True, False])
def test_last_t_denoises_to_the_weighted_mean(prior64, monkeypatch, view_aware):
    """With alpha_{T-1} -> 0 the posterior is the prior: E[x_0 | x_t] = sum_i pi_i x_i."""
    prior = prior64
    monkeypatch.setattr(prior, "config", replace(prior.config, view_aware=view_aware))
    refs = prior.references[PROMPT].images
    cameras = _cameras()
    ctx = PriorContext(PROMPT, cameras)
    weighted_mean = _log_pi(prior, cameras).exp() @ refs  # [2, D]
    x_t = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([999, 999])

    # A zero-terminal-SNR schedule (abar_{T-1} = 1e-12): exact up to alpha ~ 1e-6.
    zero_snr = prior.alphas_cumprod.clone()
    zero_snr[-1] = 1e-12
    monkeypatch.setattr(prior, "alphas_cumprod", zero_snr)
    x0 = prior.posterior_mean(x_t, t, ctx, conditional=True).flatten(1)
    torch.testing.assert_close(x0, weighted_mean, rtol=0, atol=1e-4)

    # Stable Diffusion's schedule keeps alpha_{T-1} = 0.068, so x_t still tilts the weights a
    # little: E[x_0 | x_t] stays within 0.3 of the prior's spread sqrt(sum_i pi_i ||x_i - m||^2)
    # around the weighted mean m (measured 0.05-0.13 here, at most 0.25 over 5 seeds).
    monkeypatch.undo()
    monkeypatch.setattr(prior, "config", replace(prior.config, view_aware=view_aware))
    x0 = prior.posterior_mean(x_t, t, ctx, conditional=True).flatten(1)
    pi = _log_pi(prior, cameras).exp()
    spread = (pi * torch.cdist(weighted_mean, refs) ** 2).sum(1).sqrt()
    ratio = (x0 - weighted_mean).norm(dim=1) / spread
    assert bool((ratio < 0.3).all()), ratio


def _sub_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reference_gradient_is_reproducible_and_its_error_is_calibrated(prior64):
    from benchmark.probe.reference import reference_gradient
    from estimators.sds import SDS
    from estimators.ssd import SSD, SSDConfig

    prior = prior64
    sds = SDS(SSDConfig())  # SSDConfig is a GuidanceConfig: same guidance for both
    x = prior.references[PROMPT].images[2].view(1, 3, H, W) * 0.8  # float64 like the prior
    camera = _cameras()[:1]
    args = (prior, x, PROMPT, camera, (20, 980))

    a = reference_gradient(sds, *args, _sub_generator(0), n_samples=300, chunk=64)
    b = reference_gradient(sds, *args, _sub_generator(0), n_samples=300, chunk=300)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=1e-6)  # chunking changes nothing
    assert a.mean.shape == (3, H, W) and a.mean.dtype == torch.float64 and a.n == 300

    # SSD with phi = 1, mu = 1 is SDS draw by draw, so its reference is the same
    ssd = SSD(
        SSDConfig(
            form="offset", baseline="constant", baseline_offset=1.0, baseline_scale=0.0, mu="fixed"
        )
    )
    c = reference_gradient(ssd, *args, _sub_generator(0), n_samples=300, chunk=64)
    torch.testing.assert_close(c.mean, a.mean, rtol=0, atol=1e-6)

    # the accumulators, on an estimator with known moments: G = t / 1000 + eps, so
    # E[G] = 0.5 everywhere (t ~ U{20..980}) and var_trace = D (1 + Var(t) / 1e6)
    class Known(SDS):
        def grad(self, x, t, eps, prior, ctx):
            return t.view(-1, 1, 1, 1).to(eps.dtype) / 1000.0 + eps, {}

    ref = reference_gradient(Known(SSDConfig()), *args, _sub_generator(1), 4096, chunk=500)
    d = 3 * H * W
    var_t = (961**2 - 1) / 12 / 1e6
    assert abs(ref.var_trace / (d * (1 + var_t)) - 1) < 0.03, ref.var_trace
    torch.testing.assert_close(ref.mean, torch.full_like(ref.mean, 0.5), rtol=0, atol=0.07)
    # stderr_norm = sqrt(var_trace / K) is the size of the Monte-Carlo error of the mean
    err = float((ref.mean - 0.5).norm())
    assert 0.5 * ref.stderr_norm < err < 2.0 * ref.stderr_norm, (err, ref.stderr_norm)
